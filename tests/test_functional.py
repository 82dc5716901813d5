"""acdc() against the dense float64 reference; analytic gradients (reverse, double, forward, vmap); memory."""
import pytest
import scipy.fft
import torch
from hypothesis import given, settings, strategies as st
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import acdc, acdc_reference
from torch_acdc.functional import acdc_gathered
from torch_acdc.permutations import inverse

from operator_checks import check_vmap_matches_reference


def _args(shape, n, requires_grad=True, dtype=torch.float64):
    kw = {"dtype": dtype, "requires_grad": requires_grad}
    return (torch.randn(*shape, n, **kw), torch.randn(n, **kw), torch.randn(n, **kw), torch.randn(n, **kw))


@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=2), n=st.integers(1, 40))
def test_matches_dense_reference(shape, n):
    x, a, d, b = _args(shape, n, requires_grad=False)
    torch.testing.assert_close(acdc(x, a, d, b), acdc_reference(x, a, d, b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [64, 1000, 4096, 65536])
def test_fp32_close_to_fp64_scipy_composition(n):
    """Large n: compare with scipy's float64 orthonormal DCTs composed as idct(d * dct(a * x)) + b."""
    x, a, d, b = _args((4,), n, requires_grad=False)
    got = acdc(x.float(), a.float(), d.float(), b.float())
    ref = torch.from_numpy(scipy.fft.idct(d.numpy() * scipy.fft.dct(a.numpy() * x.numpy(), norm="ortho"),
                                          norm="ortho")) + b
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


@settings(max_examples=8)
@given(shape=st.lists(st.integers(1, 2), min_size=0, max_size=2), n=st.integers(1, 9))
def test_gradcheck_and_gradgradcheck(shape, n):
    args = _args(shape, n)
    assert gradcheck(acdc, args, check_batched_grad=True)
    assert gradgradcheck(acdc, args)


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_forward_mode_matches_finite_differences(n):
    x, a, d, b = _args((3,), n, requires_grad=False)
    tx, ta, td = torch.randn_like(x), torch.randn_like(a), torch.randn_like(d)
    _, jvp = torch.func.jvp(lambda x, a, d: acdc(x, a, d, b), (x, a, d), (tx, ta, td))
    eps = 1e-6
    fd = (acdc(x + eps * tx, a + eps * ta, d + eps * td, b) - acdc(x - eps * tx, a - eps * ta, d - eps * td, b)) / (2 * eps)
    torch.testing.assert_close(jvp, fd, rtol=1e-6, atol=1e-7)
    assert gradcheck(acdc, _args((2,), n), check_forward_ad=True, check_backward_ad=False, check_batched_grad=False)


def test_vmap_over_examples_and_parameters():
    x = torch.randn(5, 3, 9, dtype=torch.float64)
    a = torch.randn(5, 9, dtype=torch.float64)
    d = torch.randn(9, dtype=torch.float64)
    check_vmap_matches_reference(acdc, acdc_reference, x, a, d)


def test_saves_input_diagonals_and_the_forward_spectrum():
    """By default the forward spectrum (rows, n//2 + 1) complex is kept beside the input (4 FFTs per f+b);
    with keeping_spectrum(False) only the input and the diagonals are saved (5 FFTs)."""
    from torch_acdc import dispatch

    x, a, d, _ = _args((4,), 16)
    for keep in (True, False):
        saved = []

        def pack(t):
            saved.append(t)
            return t

        with dispatch.keeping_spectrum(keep), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            acdc(x, a, d)
        big = [t for t in saved if t.numel() > 16]
        assert big[0].shape == x.shape
        if keep:
            assert len(big) == 2 and big[1].shape == (4, 9) and big[1].is_complex()
        else:
            assert len(big) == 1


def test_no_division_by_diagonals_zero_entries():
    x, a, d, b = _args((3,), 9)
    with torch.no_grad():
        a[::2] = 0
        d[1::3] = 0
    y = acdc(x, a, d, b)
    y.square().sum().backward()
    for t in (x.grad, a.grad, d.grad, b.grad):
        assert torch.isfinite(t).all()
    assert gradcheck(acdc, (x.detach().requires_grad_(), a.detach().requires_grad_(), d.detach().requires_grad_(), b))


@pytest.mark.parametrize("bad,match", [
    (lambda x, a, d: acdc(x[..., :-1], a, d), "last dimension 8"),
    (lambda x, a, d: acdc(x.long(), a, d), "real floating-point"),
    (lambda x, a, d: acdc(x, a[:-1], d), "size n"),
    (lambda x, a, d: acdc(x, a.unsqueeze(0), d), "1-D"),
])
def test_clear_errors(bad, match):
    x, a, d = torch.randn(2, 8), torch.randn(8), torch.randn(8)
    with pytest.raises((ValueError, TypeError), match=match):
        bad(x, a, d)


@pytest.mark.parametrize("gathers", ["none", "in", "out", "both"])
def test_gathered_core_gradients_with_any_gathers(gathers):
    """The fused-gather operator (used by stacks) for every combination of input/output gathers."""
    n = 7
    x, a, d = (torch.randn(2, n, dtype=torch.float64, requires_grad=True),
               torch.randn(n, dtype=torch.float64, requires_grad=True), torch.randn(n, dtype=torch.float64, requires_grad=True))
    p, q = torch.randperm(n), torch.randperm(n)
    g_in = (p, inverse(p)) if gathers in ("in", "both") else None
    g_out = (q, inverse(q)) if gathers in ("out", "both") else None
    fn = lambda x, a, d: acdc_gathered(x, a, d, g_in, g_out)
    assert gradcheck(fn, (x, a, d), check_forward_ad=True)
    assert gradgradcheck(fn, (x, a, d))
