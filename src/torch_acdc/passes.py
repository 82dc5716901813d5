"""The pure-torch memory-bound passes of ACDC (everything but the FFTs), one function each, written to touch memory as
few times as torch allows: in place on temporaries, no per-call tables.

* ``scale_(x, s)``, ``add_(x, b)``      x * s, x + b, in place on a temporary x when nothing can observe it
* ``gather_scale(x, idx, s)``           x[..., idx] * s        (the Makhoul reorder and a diagonal)
* ``spectral_map_(z, pre, dp, post)``   z <- post * (dp . (pre * z)), in place on a packed spectrum
* ``diag_sums(z, zeta, pre)``           sum_batch Re/Im(pre*z) * Re/Im(zeta), shape (h, 2)
* ``gather_mul_sum(g, x, idx)``         sum_batch g * x[..., idx], shape (n,)

They are plain torch ops, so they run on any device and under autograd (double backward), vmap and
torch.compile. In-place writes happen only when grad mode is off and no functorch wrapper is involved.
The fused native versions of these passes live in ``csrc/cpu``; these torch ones are the reference and the
fallback (CUDA, double backward, functorch, compile).
"""
from __future__ import annotations

import torch

from .dispatch import in_place_ok as _in_place_ok

__all__ = ["scale_", "add_", "gather_scale", "spectral_map_", "diag_sums", "gather_mul_sum"]


def scale_(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x * s, written into the temporary ``x`` when no autograd graph or vmap wrapper can observe it.

    Every elementwise pass on a fresh (B, n) tensor costs a new allocation, and on CPU fresh memory means
    page faults that cost more than the multiply itself; callers use this only on temporaries they own.
    """
    return x.mul_(s) if _in_place_ok(x, s) else x * s


def add_(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x + b, into the temporary ``x`` under the same rule as :func:`scale_`."""
    return x.add_(b) if _in_place_ok(x, b) else x + b


def gather_scale(x: torch.Tensor, idx: torch.Tensor | None, s: torch.Tensor | None) -> torch.Tensor:
    """x[..., idx] * s as a new tensor (idx None: no gather; s None: no scaling). (..., n) -> (..., n)."""
    out = x.index_select(-1, idx) if idx is not None else x.clone()
    return scale_(out, s) if s is not None else out


def spectral_map_(z: torch.Tensor, pre: torch.Tensor | None, dp: torch.Tensor,
                  post: torch.Tensor | None) -> torch.Tensor:
    """z <- post * (dp . (pre * z)) on a temporary packed spectrum z (..., h); dp (h, 2) scales Re and Im."""
    if pre is not None:
        z = scale_(z, pre)
    z = torch.view_as_complex(scale_(torch.view_as_real(z), dp))
    return scale_(z, post) if post is not None else z


def diag_sums(z: torch.Tensor, zeta: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over leading dims of (Re(pre*z) Re(zeta), Im(pre*z) Im(zeta)) -> (h, 2) real."""
    if pre is not None:
        z = scale_(z, pre)
    prod = scale_(torch.view_as_real(z), torch.view_as_real(zeta))
    return prod.reshape(-1, z.shape[-1], 2).sum(0)


def gather_mul_sum(g: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Sum over leading dims of g * x[..., idx] -> (n,)."""
    xg = x.index_select(-1, idx) if idx is not None else x
    return (g * xg).reshape(-1, g.shape[-1]).sum(0)
