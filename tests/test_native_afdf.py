"""AFDF's fused native CPU kernels against the pure-torch reference path (float64 to 1e-12, float32 loose):
forward and every gradient, batched inputs, gradcheck / gradgradcheck with native on, opcheck of the ops,
the layers (AFDF, StackedAFDF)."""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import AFDF, StackedAFDF, afdf, native
from torch_acdc.afdf import _AFDF
from operator_checks import layer_outputs_and_grads, native_and_torch

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels could not be built")
F64 = {"dtype": torch.float64}
NEEDS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
         (True, True, False), (False, True, True)]


_both = native_and_torch


def _run(x, a, d, g, needs):
    """Forward output and the gradients of <g, afdf(x, a, d)> w.r.t. the inputs in ``needs``."""
    ins = [t.detach().clone().requires_grad_(need) for t, need in zip((x, a, d), needs)]
    y = _AFDF.apply(*ins)
    y.backward(g)
    return (y.detach(), *[t.grad for t in ins])


def _assert_all_close(fast, ref, tol):
    for f, r in zip(fast, ref):
        assert (f is None) == (r is None)
        if f is not None:
            assert f.shape == r.shape and f.dtype == r.dtype
            torch.testing.assert_close(f, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 15, 64, 257])
@pytest.mark.parametrize("shape", [(), (6,), (2, 3), (2, 1, 3)])
def test_forward_and_gradients_match_torch_path_fp64(n, shape):
    torch.manual_seed(n)
    x, g = torch.randn(*shape, n, **F64), torch.randn(*shape, n, **F64)
    a, d = torch.randn(n, 2, **F64), torch.randn(n, 2, **F64)
    for needs in NEEDS:
        _assert_all_close(*_both(lambda: _run(x, a, d, g, needs)), 1e-12)


def test_native_path_is_taken_in_forward_and_backward(monkeypatch):
    calls = []
    real = native.ops
    monkeypatch.setattr(native, "ops", lambda: calls.append(1) or real())
    x, a, d = torch.randn(3, 8, requires_grad=True), torch.randn(8, 2), torch.randn(8, 2, requires_grad=True)
    with native.use_native(False):
        afdf(x, a, d).sum().backward()
    assert calls == []
    afdf(x, a, d).sum().backward()
    assert len(calls) == 2  # forward and backward


@pytest.mark.parametrize("n", [3, 64, 1000])
def test_float32_close_to_torch_path(n):
    torch.manual_seed(0)
    x, g = torch.randn(4, 5, n), torch.randn(4, 5, n)
    a, d = torch.randn(n, 2), torch.randn(n, 2)
    fast, ref = _both(lambda: _run(x, a, d, g, (True, True, True)))
    for f, r in zip(fast, ref):
        assert f.dtype == torch.float32
        assert ((f - r).abs().max() / r.abs().max()).item() < 1e-5


def test_non_contiguous_and_empty_inputs():
    x = torch.randn(7, 10, **F64)[:, 1:10:1].T.contiguous().T  # (7, 9) column-major
    a, d = torch.randn(9, 2, **F64), torch.randn(9, 2, **F64)
    g = torch.randn(9, 7, **F64).T
    _assert_all_close(*_both(lambda: _run(x, a, d, g, (True, True, True))), 1e-12)
    e = torch.randn(0, 9, **F64)
    fast, ref = _both(lambda: _run(e, a, d, e, (True, True, True)))
    _assert_all_close(fast, ref, 1e-12)
    assert fast[2].abs().sum() == 0 and fast[3].abs().sum() == 0


@pytest.mark.parametrize("n", [1, 4, 5])
def test_gradcheck_and_gradgradcheck_native_on(n):
    args = [torch.randn(2, 3, n, **F64, requires_grad=True), torch.randn(n, 2, **F64, requires_grad=True),
            torch.randn(n, 2, **F64, requires_grad=True), torch.randn(n, **F64, requires_grad=True)]
    with native.use_native(True):
        assert gradcheck(afdf, args)
        assert gradgradcheck(afdf, args)  # double backward: the differentiable torch ops


def test_layers_match_torch_path_fp32_and_fp64():
    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        for m in (AFDF(40, dtype=dtype), StackedAFDF(30, 40, depth=3, activation="relu", dtype=dtype),
                  StackedAFDF(33, 17, depth=2, dtype=dtype)):
            x = torch.randn(2, 5, m.in_features, dtype=dtype)
            run = lambda: layer_outputs_and_grads(m, x)  # noqa: E731

            _assert_all_close(*_both(run), tol)


def test_native_afdf_ops_pass_opcheck():
    """Schema, fake kernels and autograd registration of every AFDF op."""
    ops = native.ops()
    for n in (1, 6, 7):
        h = n // 2 + 1
        x, a, d = torch.randn(2, 3, n, **F64), torch.randn(n, 2, **F64), torch.randn(n, 2, **F64)
        g, s = torch.randn(2, 3, h, 2, **F64), torch.randn(2, 3, 2, h, 2, **F64)
        torch.library.opcheck(ops.afdf_stack, (x, a))
        torch.library.opcheck(ops.afdf_mix, (s, d))
        torch.library.opcheck(ops.afdf_grad_spectra, (g, d))
        for m in (True, False):
            torch.library.opcheck(ops.afdf_grad_spectra_sums_, (g, s.clone(), d, m))
        for nx, na in ((True, True), (True, False), (False, True)):
            torch.library.opcheck(ops.afdf_input_grads, (torch.randn(2, 3, 2, n, **F64), x, a, nx, na))


def test_ops_compute_the_documented_passes():
    """Each op against its formula in plain complex torch."""
    ops = native.ops()
    n = 7
    h = n // 2 + 1
    x, a, d = torch.randn(4, n, **F64), torch.randn(n, 2, **F64), torch.randn(n, 2, **F64)
    ac, dc = torch.view_as_complex(a), torch.view_as_complex(d)
    mirror = (-torch.arange(h)) % n
    p, q = (dc[:h] + dc[mirror].conj()) / 2, 1j * (dc[:h] - dc[mirror].conj()) / 2
    torch.testing.assert_close(ops.afdf_stack(x, a), torch.stack([x * ac.real, x * ac.imag], -2))
    S = torch.randn(4, 2, h, dtype=torch.complex128)
    G = torch.randn(4, h, dtype=torch.complex128)
    torch.testing.assert_close(torch.view_as_complex(ops.afdf_mix(torch.view_as_real(S), d)), p * S[:, 0] + q * S[:, 1])
    expect = torch.stack([p.conj() * G, q.conj() * G], -2)
    torch.testing.assert_close(torch.view_as_complex(ops.afdf_grad_spectra(torch.view_as_real(G), d)), expect)
    s = torch.view_as_real(S.clone())
    ops.afdf_grad_spectra_sums_(torch.view_as_real(G), s, d, True)
    torch.testing.assert_close(torch.view_as_complex(s), expect)
    r = torch.randn(4, 2, n, **F64)
    gx, ga = ops.afdf_input_grads(r, x, a, True, True)
    torch.testing.assert_close(gx, ac.real * r[:, 0] + ac.imag * r[:, 1])
    torch.testing.assert_close(ga, (x.unsqueeze(-2) * r).sum(0).T)
