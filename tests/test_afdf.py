"""AFDF: afdf() against dense complex128 references; analytic gradients; AFDF/StackedAFDF module conventions."""
import inspect
import io

import pytest
import torch
from hypothesis import given, strategies as st
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import AFDF, StackedACDC, StackedAFDF, afdf, afdf_reference
from torch_acdc.afdf import _AFDF, init_complex_diagonals_
from torch_acdc.recipe import param_groups

from operator_checks import check_vmap_matches_reference, stack_by_hand

F64 = torch.float64


def _args(shape, n, requires_grad=True):
    kw = {"dtype": F64, "requires_grad": requires_grad}
    return torch.randn(*shape, n, **kw), torch.randn(n, 2, **kw), torch.randn(n, 2, **kw), torch.randn(n, **kw)


# ---- the operator ----

@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=2), n=st.integers(1, 40))
def test_matches_dense_reference(shape, n):
    x, a, d, b = _args(shape, n, requires_grad=False)
    torch.testing.assert_close(afdf(x, a, d, b), afdf_reference(x, a, d, b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
def test_is_real_part_of_complex_fft_formula_and_accepts_complex_diagonals(n):
    """Independent check with torch.fft on complex tensors: y = Re(ifft(d * fft(a * x)))."""
    x = torch.randn(4, n, dtype=F64)
    a, d = torch.randn(n, dtype=torch.complex128), torch.randn(n, dtype=torch.complex128)
    expected = torch.fft.ifft(d * torch.fft.fft(a * x)).real
    torch.testing.assert_close(afdf(x, a, d), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(afdf(x, torch.view_as_real(a), torch.view_as_real(d)), expected, rtol=1e-10, atol=1e-10)


def test_real_a_and_hermitian_d_have_no_imaginary_part_to_drop():
    """With a real and d[k] = conj(d[-k]) the complex result is real: afdf is then the exact F^-1 D F A x."""
    n = 10
    x = torch.randn(3, n, dtype=F64)
    a = torch.randn(n, dtype=F64).to(torch.complex128)
    d = torch.fft.fft(torch.randn(n, dtype=F64))  # the spectrum of a real kernel is Hermitian
    full = torch.fft.ifft(d * torch.fft.fft(a * x))
    assert full.imag.abs().max() < 1e-12
    torch.testing.assert_close(afdf(x, a, d), full.real, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [64, 1000, 4096])
def test_fp32_close_to_fp64_reference(n):
    x, a, d, b = _args((8,), n, requires_grad=False)
    got = afdf(x.float(), a.float(), d.float(), b.float())
    ref = torch.fft.ifft(torch.view_as_complex(d) * torch.fft.fft(torch.view_as_complex(a) * x)).real + b
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.parametrize("shape,n", [((), 1), ((2,), 2), ((2,), 5), ((2, 1), 6)])
def test_gradcheck_and_gradgradcheck(shape, n):
    args = _args(shape, n)
    assert gradcheck(afdf, args, check_batched_grad=True)
    assert gradgradcheck(afdf, args)


def test_gradients_match_autograd_of_dense_reference():
    x, a, d, b = _args((2, 3), 9)
    afdf(x, a, d, b).sin().sum().backward()
    mine = [t.grad.clone() for t in (x, a, d, b)]
    for t in (x, a, d, b):
        t.grad = None
    afdf_reference(x, a, d, b).sin().sum().backward()
    for got, ref in zip(mine, (x.grad, a.grad, d.grad, b.grad)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)])
def test_partial_gradients(needs):
    x, a, d, _ = _args((2,), 6, requires_grad=False)
    for t, need in zip((x, a, d), needs):
        t.requires_grad_(need)
    assert gradcheck(_AFDF.apply, (x, a, d))


@pytest.mark.parametrize("n", [1, 4, 7])
def test_forward_mode_matches_finite_differences(n):
    x, a, d, b = _args((3,), n, requires_grad=False)
    tx, ta, td = torch.randn_like(x), torch.randn_like(a), torch.randn_like(d)
    _, jvp = torch.func.jvp(lambda x, a, d: afdf(x, a, d, b), (x, a, d), (tx, ta, td))
    eps = 1e-6
    fd = (afdf(x + eps * tx, a + eps * ta, d + eps * td, b) - afdf(x - eps * tx, a - eps * ta, d - eps * td, b)) / (2 * eps)
    torch.testing.assert_close(jvp, fd, rtol=1e-6, atol=1e-7)
    assert gradcheck(afdf, _args((2,), n), check_forward_ad=True, check_backward_ad=False, check_batched_grad=False)


def test_vmap_over_examples_and_parameters():
    x = torch.randn(5, 3, 9, dtype=F64)
    a = torch.randn(5, 9, 2, dtype=F64)
    d = torch.randn(9, 2, dtype=F64)
    check_vmap_matches_reference(afdf, afdf_reference, x, a, d)


def test_no_division_by_diagonals_zero_entries():
    x, a, d, b = _args((2,), 7)
    with torch.no_grad():
        a[::2] = 0
        d[1::3] = 0
        d[5, 1] = 0  # a purely real entry
    afdf(x, a, d, b).square().sum().backward()
    for t in (x.grad, a.grad, d.grad, b.grad):
        assert torch.isfinite(t).all()
    args = [t.detach().requires_grad_() for t in (x, a, d, b)]
    assert gradcheck(afdf, args)
    zeros = [torch.zeros_like(t).requires_grad_() for t in (x, a, d)]
    afdf(*zeros).sum().backward()
    assert all(torch.isfinite(t.grad).all() and not t.grad.any() for t in zeros[1:])


def test_saves_only_input_and_diagonals():
    x, a, d, _ = _args((4,), 16)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        afdf(x, a, d)
    assert sum(t.numel() for t in saved) == x.numel() + a.numel() + d.numel()


def test_zero_size_batch_and_low_precision():
    x, a, d, b = _args((0,), 6)
    y = afdf(x, a, d, b)
    assert y.shape == (0, 6)
    y.sum().backward()
    assert x.grad.shape == (0, 6) and not a.grad.any() and not d.grad.any()
    xb = torch.randn(4, 16).bfloat16()
    a32, d32 = torch.randn(16, 2), torch.randn(16, 2)
    out = afdf(xb, a32, d32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), afdf(xb.float(), a32, d32), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bad,match", [
    (lambda x, a, d: afdf(x[..., :-1], a, d), r"last dimension 8, got input of shape \(2, 7\)"),
    (lambda x, a, d: afdf(x.long(), a, d), "real floating-point"),
    (lambda x, a, d: afdf(x.to(torch.complex64), a, d), "torch.complex64"),
    (lambda x, a, d: afdf(x, a[:-1], d), "size n=7"),
    (lambda x, a, d: afdf(x, a[:, 0], d), r"real pairs of shape \(n, 2\)"),
    (lambda x, a, d: afdf(x, a, torch.view_as_complex(d).unsqueeze(0)), "1-D of size n"),
    (lambda x, a, d: afdf(x, a, d, torch.zeros(3)), r"bias \(3,\)"),
])
def test_clear_errors(bad, match):
    x, a, d = torch.randn(2, 8), torch.randn(8, 2), torch.randn(8, 2)
    with pytest.raises((ValueError, TypeError), match=match):
        bad(x, a, d)


# ---- modules ----

def test_afdf_module_matches_reference_and_conventions():
    layer = AFDF(10).double()
    assert (layer.in_features, layer.out_features) == (10, 10)
    assert repr(layer) == "AFDF(features=10, bias=True, init='paper')"
    assert {n: tuple(p.shape) for n, p in layer.named_parameters()} == {"a": (10, 2), "d": (10, 2), "bias": (10,)}
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, 10, dtype=F64)
    torch.testing.assert_close(layer(x), afdf_reference(x, layer.a, layer.d, layer.bias))
    torch.testing.assert_close(layer.to_dense(), afdf_reference(torch.eye(10, dtype=F64), layer.a, layer.d).T)
    assert AFDF(10, bias=False).bias is None
    torch.testing.assert_close(AFDF(6, init="identity").double()(x[:, :6]), x[:, :6], rtol=1e-12, atol=1e-12)


def test_complex_inits():
    torch.manual_seed(0)
    p = init_complex_diagonals_(torch.empty(20000, 2), "paper")
    assert abs(p[:, 0].mean() - 1) < 1e-3 and abs(p[:, 0].std() - 1e-2) < 1e-3
    assert abs(p[:, 1].mean()) < 1e-3 and abs(p[:, 1].std() - 1e-2) < 1e-3
    assert torch.equal(AFDF(5, init="identity").d, torch.tensor([[1.0, 0.0]] * 5))
    u = StackedAFDF(100, 100, 2, init="uniform").a
    assert u.min() >= -1 and u.max() <= 1 and u[..., 1].std() > 0.5
    with pytest.raises(ValueError, match="unknown init"):
        AFDF(4, init="xavier")
    with pytest.raises(ValueError, match="real pairs"):
        init_complex_diagonals_(torch.empty(4), "paper")


def test_stack_has_exactly_the_signature_of_stacked_acdc():
    assert inspect.signature(StackedAFDF) == inspect.signature(StackedACDC)
    assert StackedAFDF.acdc_diagonals == StackedACDC.acdc_diagonals


@pytest.mark.parametrize("in_f,out_f", [(8, 8), (5, 12), (12, 5), (1, 3)])
@pytest.mark.parametrize("perm", ["random", "riffle", None])
def test_stack_to_dense_matches_forward_for_any_sizes(in_f, out_f, perm):
    s = StackedAFDF(in_f, out_f, depth=3, permutation=perm).double()
    with torch.no_grad():
        s.bias.normal_()
    x = torch.randn(6, in_f, dtype=F64)
    w = s.to_dense()
    assert w.shape == (out_f, in_f)
    zero = s(torch.zeros(1, in_f, dtype=F64))
    torch.testing.assert_close(s(x), x @ w.T + zero)


def test_stack_equals_chain_of_single_layers_with_permutations():
    s = StackedAFDF(5, 7, depth=3, permutation="random", activation="relu", init="uniform").double()
    with torch.no_grad():
        s.bias.normal_()
    assert tuple(s.a.shape) == (3, 7, 2) and tuple(s.perms.shape) == (2, 7)
    x = torch.randn(4, 5, dtype=F64)
    torch.testing.assert_close(s(x), stack_by_hand(s, x, afdf_reference))


def test_stack_gradcheck():
    s = StackedAFDF(4, 6, depth=2, permutation="riffle", activation="tanh", init="uniform").double()
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    assert gradcheck(lambda x, a, d: torch.func.functional_call(s, {"a": a, "d": d}, (x,)),
                     (x, s.a.detach().clone().requires_grad_(), s.d.detach().clone().requires_grad_()))


def test_state_dict_roundtrip_and_errors():
    s = StackedAFDF(16, 16, depth=3, activation="tanh")
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = StackedAFDF(16, 16, depth=3, activation="tanh")
    t.load_state_dict(torch.load(buf))
    x = torch.randn(3, 16)
    assert torch.equal(s(x), t(x))
    with pytest.raises(RuntimeError, match="this StackedAFDF has activation"):
        s.to_dense()
    with pytest.raises(ValueError, match=r"StackedAFDF expected input with last dimension 16, got input of shape \(2, 5\)"):
        s(torch.randn(2, 5))
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        StackedAFDF(4, 4, 0)
    with pytest.raises(ValueError, match="unknown permutation"):
        StackedAFDF(4, 4, 2, permutation="butterfly")


def test_recipe_groups_and_training_step():
    torch.manual_seed(0)
    s = StackedAFDF(9, 4, depth=2)
    groups = {g["name"]: g for g in param_groups(s, lr=0.01)}
    assert groups["acdc_A"]["params"][0] is s.a and groups["acdc_D"]["params"][0] is s.d
    assert groups["other"]["params"][0] is s.bias
    y = s(torch.randn(0, 9))
    assert y.shape == (0, 4)
    x, target = torch.randn(32, 9), torch.randn(32, 4)
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (s(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert s(x.bfloat16()).dtype == torch.bfloat16
