"""The fused native CPU kernels against the pure-torch reference path (float64, tight), gradients through
both paths, opcheck of the native ops, the fallback switch and warning."""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import ACDC, StackedACDC, acdc, native
from torch_acdc.functional import acdc_forward, acdc_grads
from torch_acdc.permutations import inverse
from torch_acdc.transform import makhoul_permutation
from operator_checks import layer_outputs_and_grads, native_and_torch

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels could not be built")
F64 = {"dtype": torch.float64}


_both = native_and_torch


NEEDS = [(True, True, True, True), (True, False, False, False), (False, True, False, False),
         (False, False, True, False), (False, False, False, True), (True, True, True, False)]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 15, 64, 257])
@pytest.mark.parametrize("gathers", ["none", "in", "both", "makhoul"])
@pytest.mark.parametrize("bias", [False, True])
def test_operator_and_gradients_match_torch_path(n, gathers, bias):
    """Every gather kind the kernels distinguish (none, a random index, Makhoul's reorder in and its inverse
    out as in one ACDC layer), with and without the spectral bias, every subset of gradients."""
    torch.manual_seed(n)
    x, a, d, g = torch.randn(6, n, **F64), torch.randn(n, **F64), torch.randn(n, **F64), torch.randn(6, n, **F64)
    b = torch.randn(n, **F64) if bias else None
    p, q = torch.randperm(n), torch.randperm(n)
    if gathers == "makhoul":
        p, q = makhoul_permutation(n, "cpu")[0], makhoul_permutation(n, "cpu")[1]
    in_idx = p if gathers != "none" else None
    out_idx, out_inv = (q, inverse(q)) if gathers in ("both", "makhoul") else (None, None)
    with torch.no_grad():
        for needs in NEEDS:
            fast, ref = _both(lambda: (acdc_forward(x, a, d, b, in_idx, out_idx),
                                       *acdc_grads(g, x, a, d, in_idx, None if in_idx is None else inverse(p),
                                                   out_inv, needs)))
            for f, r in zip(fast, ref):
                assert (f is None) == (r is None)
                if f is not None:
                    torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", range(1, 18))
def test_structured_gathers_equal_index_select(n):
    """The kernels run Makhoul's reorder and its inverse as structured loops: exact against index_select,
    with and without scale and bias, for odd and even n; a random index takes the general loop."""
    ops = native.ops()
    x, s, b = torch.randn(3, 2, n, **F64), torch.randn(n, **F64), torch.randn(n, **F64)
    perm, iperm = makhoul_permutation(n, "cpu")
    for idx in (perm, iperm, torch.randperm(n), None):
        ref = x if idx is None else x.index_select(-1, idx)
        torch.testing.assert_close(ops.gather_scale(x, idx, None, None), ref, rtol=0, atol=0)
        torch.testing.assert_close(ops.gather_scale(x, idx, s, b), ref * s + b, rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(ops.gather_scale(x, idx, None, b), ref + b, rtol=0, atol=0)
        inplace, out = x.clone(), torch.empty_like(x)
        ops.gather_scale_(inplace, idx, s, b)
        torch.testing.assert_close(inplace, ref * s + b, rtol=1e-15, atol=1e-15)
        ops.gather_scale_out(out, x, idx, s, None)
        torch.testing.assert_close(out, ref * s, rtol=1e-15, atol=1e-15)
        bsrc = b if idx is None else b.index_select(-1, idx)  # gather_b: the bias is gathered with x
        torch.testing.assert_close(ops.gather_scale(x, idx, None, b, True), ref + bsrc, rtol=0, atol=0)
        g = torch.randn_like(x)
        inv = None if idx is None else inverse(idx)
        gx_ref = (g * s) if inv is None else (g * s).index_select(-1, inv)
        ga_ref = (ref * g).reshape(-1, n).sum(0)
        gx, ga = ops.input_grads(g, x, idx, s, True, True)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(ga, ga_ref, rtol=1e-12, atol=1e-12)
        g_inplace = g.clone()
        torch.testing.assert_close(ops.input_grads_(g_inplace, x, idx, s, True, True), ga_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_inplace, gx_ref, rtol=1e-15, atol=1e-15)


def test_native_path_is_taken_and_switch_forces_torch(monkeypatch):
    calls = []
    real = native.ops
    monkeypatch.setattr(native, "ops", lambda: calls.append(1) or real())
    x, a, d = torch.randn(3, 8), torch.randn(8), torch.randn(8)
    with native.use_native(False):
        acdc(x, a, d)
    assert calls == []
    acdc(x, a, d)
    with torch.no_grad():
        assert calls and native.usable(x) and not native.usable(x.to(torch.float16))
    assert not native.usable(x)  # grad mode on: only double backward runs here, and it needs torch ops


@pytest.mark.parametrize("flag", [True, False])
def test_gradcheck_and_gradgradcheck_both_paths(flag):
    args = [torch.randn(*s, **F64, requires_grad=True) for s in ((2, 4), (4,), (4,), (4,))]
    with native.use_native(flag):
        assert gradcheck(acdc, args)
        assert gradgradcheck(acdc, args)  # double backward: differentiable torch ops


def test_layers_match_torch_path_fp32_and_fp64():
    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        for m in (ACDC(40, dtype=dtype), StackedACDC(30, 40, depth=3, activation="relu", dtype=dtype)):
            x = torch.randn(5, m.in_features, dtype=dtype)
            run = lambda: layer_outputs_and_grads(m, x)  # noqa: E731

            for f, r in zip(*_both(run)):
                torch.testing.assert_close(f, r, rtol=tol, atol=tol)


def test_native_ops_pass_opcheck():
    """Schema, fake kernels and autograd registration of every op; compiled (aot) dispatch of one."""
    fast = {"test_utils": ("test_schema", "test_faketensor", "test_autograd_registration")}
    ops = native.ops()
    x, i, s = torch.randn(4, 9, **F64), torch.randperm(9), torch.randn(9, **F64)
    torch.library.opcheck(ops.gather_scale, (x, i, s, s))
    torch.library.opcheck(ops.gather_scale, (x, None, None, None), **fast)
    z, v = torch.randn(4, 5, 2, **F64), torch.randn(4, 5, 2, **F64)
    w = torch.view_as_real(torch.polar(torch.ones(5, **F64), torch.arange(5, **F64)))
    torch.library.opcheck(ops.bin_map_, (z, s, w, None), **fast)
    torch.library.opcheck(ops.bin_map_, (z, s, w, w.clone()), **fast)
    torch.library.opcheck(ops.spectral_grads_, (v, z, w, s), **fast)
    torch.library.opcheck(ops.spectral_grads_, (None, z, w, s), **fast)
    torch.library.opcheck(ops.input_grads, (x, x.clone(), i, s, True, True), **fast)
    torch.library.opcheck(ops.input_grads_, (x.clone(), x, i, s, True, True), **fast)
    torch.library.opcheck(ops.gather_scale_, (x.clone(), i, s, s, True), **fast)
    torch.library.opcheck(ops.gather_scale_out, (torch.empty_like(x), x, i, s, None), **fast)
    from torch_acdc.transform import makhoul_tables

    t = makhoul_tables(9, torch.float64, "cpu")
    perm, iperm = makhoul_permutation(9, "cpu")
    torch.library.opcheck(ops.acdc_forward, (x, s, s, s, perm, iperm, t.twiddle_pairs), **fast)
    torch.library.opcheck(ops.acdc_forward, (x, s, s, s, i, None, t.twiddle_pairs), **fast)
    torch.library.opcheck(ops.acdc_backward, (x.clone(), x, s, s, perm, perm, t.twiddle_pairs, t.unpack,
                                              t.scale_sq, True, True, True, True), **fast)
    torch.library.opcheck(ops.acdc_backward, (x.clone(), x, s, s, None, None, t.twiddle_pairs, t.unpack,
                                              t.scale_sq, False, True, False, False), **fast)


@pytest.mark.parametrize("rows", [0, 1])
def test_composite_ops_on_empty_and_single_row_batches(rows):
    """The one-call forward/backward ops handle an empty batch (no FFT on zero rows) and a batch of one."""
    torch.manual_seed(rows)
    x, a, d, b = torch.randn(rows, 12, **F64), torch.randn(12, **F64), torch.randn(12, **F64), torch.randn(12, **F64)
    g = torch.randn(rows, 12, **F64)
    perm, iperm = makhoul_permutation(12, "cpu")
    with torch.no_grad():
        fast, ref = native_and_torch(lambda: (acdc_forward(x, a, d, b, perm, iperm),
                                              *acdc_grads(g, x, a, d, perm, iperm, perm, (True,) * 4)))
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12)


def test_unavailable_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(native, "_state", {**native._state, "loaded": None})
    monkeypatch.setattr(native, "library_path", lambda: (_ for _ in ()).throw(OSError("no compiler")))
    x, a, d = torch.randn(2, 5, **F64), torch.randn(5, **F64), torch.randn(5, **F64)
    with pytest.warns(RuntimeWarning, match="native CPU kernels unavailable.*no compiler"):
        y = acdc(x, a, d)
    assert not native.available()  # no second warning: the result is remembered
    with native.use_native(False):
        torch.testing.assert_close(y, acdc(x, a, d))



def test_old_builds_are_pruned(tmp_path):
    """Each source change builds a new library; only the newest few stay in the build folder."""
    import os

    for i in range(6):
        f = tmp_path / f"acdc_kernels-{i:016x}.so"
        f.write_bytes(b"")
        os.utime(f, (1000 + i, 1000 + i))
    (tmp_path / "unrelated.txt").write_text("kept")
    native._prune(tmp_path, keep=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"acdc_kernels-{i:016x}.so" for i in range(2, 6)] + ["unrelated.txt"]


def test_retain_freed_memory_sets_glibc_thresholds():
    """On glibc the call succeeds (and may be repeated); the process keeps working normally afterwards."""
    import platform

    ok = native.retain_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok and native.retain_freed_memory()
    x = torch.randn(64, 4096)
    torch.testing.assert_close(torch.fft.irfft(torch.fft.rfft(x), 4096), x, rtol=1e-5, atol=1e-5)


def test_exactly_zero_bias_gradients_stay_zero():
    """Outputs that do not reach the loss have an exactly zero bias gradient on both paths (optimisers such
    as Adam turn rounding noise into lr-sized steps), for one layer and inside a stack."""
    torch.manual_seed(0)
    for m in (ACDC(32), StackedACDC(32, 32, depth=3)):
        def run():
            m.zero_grad(set_to_none=True)
            m(torch.randn(8, 32))[:, :10].sum().backward()
            return m.bias.grad.clone()
        for grad in native_and_torch(run):
            assert torch.all(grad.reshape(-1, 32)[-1, 10:] == 0)
