"""The four memory-bound passes of ACDC, each with a plain torch implementation and a fused CPU kernel.

ACDC's FFTs are library calls; everything else is a handful of passes over (B, n) memory, and on CPU those
passes (gathers especially: ``index_select`` on the last dimension runs at ~1/4 of copy speed) cost about as
much as the FFTs. Each function below does one fused pass:

* ``gather_scale(x, idx, s)``     -> x[..., idx] * s                   (the Makhoul reorder and a diagonal)
* ``spectral_map_(z, pre, dp, post)`` z <- post * (dp . (pre * z)), in place on a packed spectrum
* ``diag_sums(z, zeta, pre)``     -> sum_batch Re/Im(pre*z) * Re/Im(zeta), shape (h, 2)
* ``gather_mul_sum(g, x, idx)``   -> sum_batch g * x[..., idx], shape (n,)

The torch versions are the reference and run everywhere (any device, autograd, vmap, double backward). The
numba versions (single-threaded loops, compiled on first use and cached on disk) are used only for plain,
contiguous CPU float32/float64 tensors outside autograd recording; ``TORCH_ACDC_KERNELS=torch`` disables them.
Tests check both against each other.
"""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["scale_", "gather_scale", "spectral_map_", "diag_sums", "gather_mul_sum", "numba_available", "use_fused"]

try:  # numba is a declared dependency, but the library stays usable (slower) without it
    import numba
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

_FLOATS = (torch.float32, torch.float64)


def numba_available() -> bool:
    return numba is not None and os.environ.get("TORCH_ACDC_KERNELS", "auto") != "torch"


def use_fused(*tensors: torch.Tensor | None) -> bool:
    """True when the fused CPU kernels may run on these tensors (else the torch reference runs)."""
    if not numba_available() or torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or not t.is_contiguous() or _wrapped(t):
            return False
        if t.dtype not in _FLOATS and not (t.is_complex() and t.dtype in (torch.complex64, torch.complex128)) \
                and t.dtype != torch.int64:
            return False
        if t.is_conj() or t.is_neg():
            return False
    return True


def _wrapped(t: torch.Tensor) -> bool:
    """A vmap/functorch wrapper (new or legacy): such tensors have no plain storage to hand to a kernel."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t) or torch._C._functorch.is_legacy_batchedtensor(t)


def scale_(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x * s, written into the temporary ``x`` when no autograd graph or vmap wrapper can observe it.

    Every elementwise pass on a fresh (B, n) tensor costs a new allocation, and on CPU fresh memory means
    page faults that cost more than the multiply itself; callers use this only on temporaries they own.
    """
    if torch.is_grad_enabled() or _wrapped(x) or _wrapped(s):
        return x * s
    return x.mul_(s)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


# ----------------------------------------------------------------------------------------- torch reference

def _gather_scale_torch(x, idx, s):
    out = x.index_select(-1, idx) if idx is not None else x.clone()
    return scale_(out, s) if s is not None else out


def _spectral_map_torch(z, pre, dp, post):
    if pre is not None:
        z = scale_(z, pre)
    z = torch.view_as_complex(scale_(torch.view_as_real(z), dp))
    return scale_(z, post) if post is not None else z


def _diag_sums_torch(z, zeta, pre):
    if pre is not None:
        z = z * pre
    prod = torch.view_as_real(z) * torch.view_as_real(zeta)
    return prod.reshape(-1, z.shape[-1], 2).sum(0)


def _gather_mul_sum_torch(g, x, idx):
    xg = x.index_select(-1, idx) if idx is not None else x
    return (g * xg).reshape(-1, g.shape[-1]).sum(0)


# ------------------------------------------------------------------------------------------- numba kernels

if numba is not None:
    _jit = numba.njit(cache=True, nogil=True, fastmath=False)

    @_jit
    def _nb_gather_scale(x, idx, s, out):
        rows, n = out.shape
        for b in range(rows):
            xb = x[b]
            ob = out[b]
            for j in range(n):
                ob[j] = xb[idx[j]] * s[j]

    # Complex arrays are passed as real views (..., h, 2) so that all arithmetic stays in the input precision.
    @_jit
    def _nb_spectral_map(z, pre, dp, post):
        rows, h, _ = z.shape
        for b in range(rows):
            zb = z[b]
            for k in range(h):
                re = (zb[k, 0] * pre[k, 0] - zb[k, 1] * pre[k, 1]) * dp[k, 0]
                im = (zb[k, 0] * pre[k, 1] + zb[k, 1] * pre[k, 0]) * dp[k, 1]
                zb[k, 0] = post[k, 0] * re - post[k, 1] * im
                zb[k, 1] = post[k, 0] * im + post[k, 1] * re

    @_jit
    def _nb_diag_sums(z, zeta, pre, out):
        rows, h, _ = z.shape
        for b in range(rows):
            zb = z[b]
            gb = zeta[b]
            for k in range(h):
                out[k, 0] += (zb[k, 0] * pre[k, 0] - zb[k, 1] * pre[k, 1]) * gb[k, 0]
                out[k, 1] += (zb[k, 0] * pre[k, 1] + zb[k, 1] * pre[k, 0]) * gb[k, 1]

    @_jit
    def _nb_gather_mul_sum(g, x, idx, out):
        rows, n = g.shape
        for b in range(rows):
            gb = g[b]
            xb = x[b]
            for j in range(n):
                out[j] += gb[j] * xb[idx[j]]


def _np(t: torch.Tensor):
    return t.detach().numpy()


def _np_complex_rows(z: torch.Tensor):
    """(..., h) complex -> numpy (rows, h, 2) real view (no copy)."""
    return torch.view_as_real(z).reshape(-1, z.shape[-1], 2).numpy()


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: torch.dtype):
    """A cached CPU vector of ones standing in for an absent diagonal (never written to)."""
    return torch.ones(n, dtype=dtype).numpy() if not dtype.is_complex else \
        torch.view_as_real(torch.ones(n, dtype=dtype)).numpy()


def _np_complex_vec(w: torch.Tensor | None, like: torch.Tensor):
    return _ones(like.shape[-1], like.dtype) if w is None else torch.view_as_real(w).numpy()


@functools.lru_cache(maxsize=64)
def _arange(n: int):
    return torch.arange(n).numpy()


# -------------------------------------------------------------------------------------------- dispatchers

def gather_scale(x: torch.Tensor, idx: torch.Tensor | None, s: torch.Tensor | None) -> torch.Tensor:
    """x[..., idx] * s as a new tensor (idx None: no gather; s None: no scaling). (..., n) -> (..., n)."""
    if x.numel() == 0 or not use_fused(x, idx, s) or (s is not None and s.dtype != x.dtype):
        return _gather_scale_torch(x, idx, s)
    n = x.shape[-1]
    out = torch.empty_like(x)
    _nb_gather_scale(_np(_rows(x)), _arange(n) if idx is None else _np(idx),
                     _ones(n, x.dtype) if s is None else _np(s), _np(_rows(out)))
    return out


def spectral_map_(z: torch.Tensor, pre: torch.Tensor | None, dp: torch.Tensor,
                  post: torch.Tensor | None) -> torch.Tensor:
    """z <- post * (dp . (pre * z)) on a temporary packed spectrum z (..., h); dp (h, 2) scales Re and Im."""
    if z.numel() == 0 or not use_fused(z, pre, dp, post) or dp.dim() != 2:
        return _spectral_map_torch(z, pre, dp, post)
    _nb_spectral_map(_np_complex_rows(z), _np_complex_vec(pre, z), _np(dp), _np_complex_vec(post, z))
    return z


def diag_sums(z: torch.Tensor, zeta: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
    """sum over leading dims of (Re(pre*z) Re(zeta), Im(pre*z) Im(zeta)) -> (h, 2) real."""
    if z.numel() == 0 or not use_fused(z, zeta, pre):
        return _diag_sums_torch(z, zeta, pre)
    out = torch.zeros(z.shape[-1], 2, dtype=torch.view_as_real(z).dtype)
    _nb_diag_sums(_np_complex_rows(z), _np_complex_rows(zeta), _np_complex_vec(pre, z), _np(out))
    return out


def gather_mul_sum(g: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """sum over leading dims of g * x[..., idx] -> (n,)."""
    if g.numel() == 0 or not use_fused(g, x, idx) or g.dtype != x.dtype:
        return _gather_mul_sum_torch(g, x, idx)
    n = g.shape[-1]
    out = torch.zeros(n, dtype=g.dtype)
    _nb_gather_mul_sum(_np(_rows(g)), _np(_rows(x)), _arange(n) if idx is None else _np(idx), _np(out))
    return out
