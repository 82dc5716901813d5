"""The fused native CPU kernels against the pure-torch reference path (float64, tight), gradients through
both paths, opcheck of the native ops, the fallback switch and warning."""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import ACDC, StackedACDC, acdc, dispatch, native
from torch_acdc.functional import acdc_forward, acdc_grads
from torch_acdc.permutations import inverse
from torch_acdc.transform import makhoul_permutation
from operator_checks import layer_outputs_and_grads, native_and_torch

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels could not be built")
F64 = {"dtype": torch.float64}


_both = native_and_torch


NEEDS = [(True, True, True, True), (True, False, False, False), (False, True, False, False),
         (False, False, True, False), (False, False, False, True), (True, True, True, False)]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 15, 17, 64, 257])
@pytest.mark.parametrize("gathers", ["none", "in", "both", "makhoul", "inverse"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("param", [False, True])
def test_operator_and_gradients_match_torch_path(n, gathers, bias, param):
    """Every gather kind the kernels distinguish (none, a random index, Makhoul's reorder in and its inverse
    out as in one ACDC layer, the inverse alone), parameters given in the natural order (p_idx) or not, with
    and without the spectral bias, the kept forward spectrum or not, every subset of gradients."""
    torch.manual_seed(n)
    x, a, d, g = torch.randn(6, n, **F64), torch.randn(n, **F64), torch.randn(n, **F64), torch.randn(6, n, **F64)
    b = torch.randn(n, **F64) if bias else None
    p, q = torch.randperm(n), torch.randperm(n)
    perm, iperm = makhoul_permutation(n, "cpu")
    if gathers == "makhoul":
        p, q = perm, iperm
    elif gathers == "inverse":
        p = iperm
    in_idx = p if gathers != "none" else None
    out_idx, out_inv = (q, inverse(q)) if gathers in ("both", "makhoul") else (None, None)
    p_idx, p_inv = (perm, iperm) if param else (None, None)
    in_inv = None if in_idx is None else inverse(in_idx)
    with torch.no_grad():
        for keep in (False, True):
            for needs in NEEDS:
                def run():
                    y, v = acdc_forward(x, a, d, b, p_idx, in_idx, out_idx, keep)
                    assert (v is not None) == keep
                    return (y, *acdc_grads(g, x, a, d, v, p_idx, p_inv, in_idx, in_inv, out_inv, needs))
                fast, ref = _both(run)
                for f, r in zip(fast, ref):
                    assert (f is None) == (r is None)
                    if f is not None:
                        torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12)


def _native_calls(fn) -> int:
    """How many native ACDC ops ``fn()`` ran (from the profiler's op records)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("torch_acdc_native::"))


def test_native_path_is_taken_and_switch_forces_torch():
    x, a, d = torch.randn(3, 8), torch.randn(8), torch.randn(8)
    with native.use_native(False):
        assert _native_calls(lambda: acdc(x, a, d)) == 0
    assert _native_calls(lambda: acdc(x, a, d)) == 1  # one op call per layer and direction
    xg = x.clone().requires_grad_()
    assert _native_calls(lambda: acdc(xg, a, d).sum().backward()) == 2
    with torch.no_grad():
        assert dispatch.kernel(x) == "native" and dispatch.kernel(x.to(torch.float16)) == "torch"
    assert dispatch.kernel(xg) == "torch"  # grad mode on and x requires grad: only double backward runs here


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
    """Schema, fake kernels and autograd registration of every ACDC op; compiled (aot) dispatch of one."""
    fast = {"test_utils": ("test_schema", "test_faketensor", "test_autograd_registration")}
    ops = native.ops()
    x, i, s = torch.randn(4, 9, **F64), torch.randperm(9), torch.randn(9, **F64)
    from torch_acdc.transform import makhoul_tables

    t = makhoul_tables(9, torch.float64, "cpu")
    perm, iperm = makhoul_permutation(9, "cpu")
    torch.library.opcheck(ops.acdc_forward, (x, s, s, s, perm, perm, iperm, t.twiddle_pairs, True))
    torch.library.opcheck(ops.acdc_forward, (x, s, s, s, None, i, None, t.twiddle_pairs, False), **fast)
    v = torch.fft.rfft(x)
    torch.library.opcheck(ops.acdc_backward, (x.clone(), x, s, s, v, perm, perm, iperm, t.twiddle_pairs, t.unpack,
                                              t.scale_sq, True, True, True, True), **fast)
    torch.library.opcheck(ops.acdc_backward, (x.clone(), x, s, s, None, None, None, None, t.twiddle_pairs,
                                              t.unpack, t.scale_sq, False, True, False, False), **fast)


@pytest.mark.parametrize("rows", [0, 1])
def test_composite_ops_on_empty_and_single_row_batches(rows):
    """The one-call forward/backward ops handle an empty batch (no FFT on zero rows) and a batch of one."""
    torch.manual_seed(rows)
    x, a, d, b = torch.randn(rows, 12, **F64), torch.randn(12, **F64), torch.randn(12, **F64), torch.randn(12, **F64)
    g = torch.randn(rows, 12, **F64)
    perm, iperm = makhoul_permutation(12, "cpu")
    with torch.no_grad():
        fast, ref = native_and_torch(lambda: (acdc_forward(x, a, d, b, perm, perm, iperm)[0],
                                              *acdc_grads(g, x, a, d, None, perm, iperm, perm, iperm, perm,
                                                          (True,) * 4)))
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12)


def test_unavailable_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(native, "_state", {**native._state, "loaded": None})
    monkeypatch.setattr(native._build_mod, "ensure_built", lambda **_: (_ for _ in ()).throw(OSError("no compiler")))
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
    from torch_acdc.native import builder

    builder.prune(tmp_path, keep=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"acdc_kernels-{i:016x}.so" for i in range(2, 6)] + ["unrelated.txt"]


def test_retain_freed_memory_sets_glibc_thresholds():
    """On glibc the call succeeds (and may be repeated); the process keeps working normally afterwards."""
    import platform

    from torch_acdc.memory import retain_freed_memory

    ok = retain_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok and retain_freed_memory()
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
