"""The fused CPU kernels against their plain torch references (both always run here)."""
import pytest
import torch

from torch_acdc import kernels

pytestmark = pytest.mark.skipif(not kernels.numba_available(), reason="numba kernels disabled or missing")


def _both(fn_name, *args):
    torch_version = getattr(kernels, f"_{fn_name.rstrip('_')}_torch")
    with torch.no_grad():
        fused = getattr(kernels, fn_name)(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        ref = torch_version(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    return fused, ref


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 16), (4, 65)])
def test_fused_kernels_match_torch(dtype, tol, shape):
    n = shape[-1]
    h = n // 2 + 1
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    x = torch.randn(*shape, dtype=dtype)
    idx = torch.randperm(n)
    s = torch.randn(n, dtype=dtype)
    z = torch.randn(*shape[:-1], h, dtype=cdt)
    zeta = torch.randn(*shape[:-1], h, dtype=cdt)
    pre, post = torch.randn(h, dtype=cdt), torch.randn(h, dtype=cdt)
    dp = torch.randn(h, 2, dtype=dtype)
    for name, args in [("gather_scale", (x, idx, s)), ("gather_scale", (x, None, s)), ("gather_scale", (x, idx, None)),
                       ("spectral_map_", (z, pre, dp, post)), ("spectral_map_", (z, None, dp, post)),
                       ("diag_sums", (z, zeta, pre)), ("diag_sums", (z, zeta, None)),
                       ("gather_mul_sum", (x, x.flip(-1).contiguous(), idx))]:
        fused, ref = _both(name, *args)
        torch.testing.assert_close(fused, ref, rtol=tol * 10, atol=tol * 10 * max(1, shape[0]))


def test_fused_path_is_used_only_outside_autograd_and_on_plain_cpu_tensors():
    x = torch.randn(2, 4)
    assert not kernels.use_fused(x)  # grad mode is on
    with torch.no_grad():
        assert kernels.use_fused(x)
        assert not kernels.use_fused(x.t())  # non-contiguous
        assert not kernels.use_fused(torch.randn(2, 4, dtype=torch.float16))


def test_env_switch_disables_fused(monkeypatch):
    monkeypatch.setenv("TORCH_ACDC_KERNELS", "torch")
    with torch.no_grad():
        assert not kernels.use_fused(torch.randn(2, 4))
