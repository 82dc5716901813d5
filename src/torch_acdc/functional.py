"""The ACDC operator y = C^T D C (a * x) + bias as autograd Functions with analytic gradients.

Notation (see :mod:`torch_acdc.transform`): M is the unnormalised DCT-II and C = diag(s) M the orthonormal
one, so ``C^T D C = M^-1 D M`` (diagonals commute). In the packed spectrum z = w * rfft(P u) the middle
``M^-1 D M`` is a *per-bin real 2x2 diagonal*: ``z' = Re z * d[k] + i Im z * d[n-k]`` (``dp`` below, the
diagonal packed like z). So, in Makhoul order (v = P u):

    forward   y_P = irfft(conj(w) * (dp . (w * rfft(a_P * v))))          1 rfft + 1 irfft
    backward  g_P = same middle map applied to grad_y_P (it is symmetric)   1 rfft + 1 irfft
              grad_v = a_P * g_P,  grad_a_P = sum_batch v * g_P
              grad_d = s^2 * unpack(sum_batch Re/Im(z) * Re/Im(zeta))       1 rfft (recomputed z)

Five FFTs for forward+backward, no division by a or d anywhere, and only (v, a_P, d) saved for backward.
Permutations are separate, cheap autograd Functions (a gather whose backward is the inverse gather), so a
stack fuses P^T of one layer, the inter-layer shuffle and P of the next into one gather.

Reference: :func:`acdc_reference` (dense float64 matrices) is the plain implementation the fast path is
tested against.
"""
from __future__ import annotations

import torch

from .transform import (
    MakhoulTables,
    check_float_input,
    compute_dtype,
    dct_matrix,
    inverse_spectrum,
    makhoul_tables,
    spectrum,
)

__all__ = ["acdc", "acdc_reference", "permute", "acdc_makhoul", "packed_diagonal"]


def packed_diagonal(d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """(n,) diagonal -> (h, 2) real pairs (d[k], d[n-k]) acting on the real view of z; d[n] := 0."""
    return d.index_select(-1, t.pack).reshape(*d.shape[:-1], t.bins, 2) * t.pack_sign.abs()


def middle(v: torch.Tensor, dp: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """M^-1 D M in Makhoul order: (..., n) -> (..., n). 1 rfft + 1 irfft + 3 elementwise passes."""
    z = torch.view_as_real(spectrum(v, t)) * dp
    return inverse_spectrum(torch.view_as_complex(z), t)


def _sum_leading(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[-1:]).sum(0) if x.dim() > 1 else x


def _diag_grad(v_scaled: torch.Tensor, zeta: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """grad_d[k] = s_k^2 * sum_batch (M u)[k] (M g)[k], from the packed spectra of u and g. -> (n,)."""
    z = spectrum(v_scaled, t)
    prod = torch.view_as_real(z) * torch.view_as_real(zeta)
    prod = prod.reshape(-1, t.bins * 2).sum(0)
    return prod.index_select(-1, t.unpack) * t.scale.square()


class _ACDCMakhoul(torch.autograd.Function):
    """y_P = M^-1 D M (a_P * v) with v, a_P, y_P in Makhoul order. Inputs v (..., n), a_P (n,), d (n,)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(v, a_p, d):
        t = makhoul_tables(v.shape[-1], v.dtype, v.device)
        return middle(v * a_p, packed_diagonal(d, t), t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        v, a_p, d = ctx.saved_tensors
        t = makhoul_tables(v.shape[-1], v.dtype, v.device)
        zeta = spectrum(grad_y, t)
        grad_v = grad_a = grad_d = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dz = torch.view_as_complex(torch.view_as_real(zeta) * packed_diagonal(d, t))
            g = inverse_spectrum(dz, t)
            del dz
            if ctx.needs_input_grad[0]:
                grad_v = g * a_p
            if ctx.needs_input_grad[1]:
                grad_a = _sum_leading(g * v)
            del g
        if ctx.needs_input_grad[2]:
            grad_d = _diag_grad(v * a_p, zeta, t)
        return grad_v, grad_a, grad_d

    @staticmethod
    def jvp(ctx, dv, da, dd):
        v, a_p, d = ctx.saved_tensors
        t = makhoul_tables(v.shape[-1], v.dtype, v.device)
        du = None
        if dv is not None:
            du = dv * a_p
        if da is not None:
            du = v * da if du is None else du + v * da
        out = None
        if du is not None:
            out = middle(du, packed_diagonal(d, t), t)
        if dd is not None:
            term = middle(v * a_p, packed_diagonal(dd, t), t)
            out = term if out is None else out + term
        return out if out is not None else torch.zeros_like(v)


class _Permute(torch.autograd.Function):
    """x.index_select(-1, idx); backward is the inverse gather (no scatter). Inputs x, idx, inv."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, idx, inv):
        return x.index_select(-1, idx)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, idx, inv = inputs
        ctx.save_for_backward(idx, inv)
        ctx.save_for_forward(idx, inv)

    @staticmethod
    def backward(ctx, g):
        idx, inv = ctx.saved_tensors
        return _Permute.apply(g, inv, idx), None, None

    @staticmethod
    def jvp(ctx, dx, _didx, _dinv):
        idx, inv = ctx.saved_tensors
        return _Permute.apply(dx, idx, inv)


def permute(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """Gather the last dimension: ``x[..., idx]``; ``inv`` must be the inverse permutation of ``idx``."""
    return _Permute.apply(x, idx, inv)


def acdc_makhoul(v: torch.Tensor, a_p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The ACDC middle on inputs already in Makhoul order (for fused stacks). (..., n) -> (..., n)."""
    return _ACDCMakhoul.apply(v, a_p, d)


def check_acdc_args(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias) -> torch.dtype:
    """Validate shapes/dtypes of an ACDC call; return the compute dtype."""
    check_float_input(x, "ACDC input")
    for name, p in (("a", a), ("d", d)) + ((("bias", bias),) if bias is not None else ()):
        check_float_input(p, f"ACDC diagonal {name}" if name != "bias" else "ACDC bias")
        if p.dim() != 1:
            raise ValueError(f"ACDC {name} must be 1-D of size n, got shape {tuple(p.shape)}")
    n = a.shape[0]
    if d.shape[0] != n or (bias is not None and bias.shape[0] != n):
        raise ValueError(
            f"ACDC a, d and bias must all have size n={n}, got a {tuple(a.shape)}, d {tuple(d.shape)}"
            + (f", bias {tuple(bias.shape)}" if bias is not None else "")
        )
    if x.shape[-1] != n:
        raise ValueError(f"ACDC expected input with last dimension {n}, got input of shape {tuple(x.shape)}")
    if n == 0:
        raise ValueError("ACDC needs n >= 1 features, got 0")
    return compute_dtype(torch.promote_types(x.dtype, a.dtype))


def acdc(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = idct(d * dct(a * x)) + bias along the last dimension.

    x: (..., n) real floating; a, d, bias: (n,). Returns x's dtype (fp16/bf16 are computed in float32).
    O(n log n) per row forward and backward (5 real FFTs in total); saves only the input (in Makhoul order),
    a and d for backward. Differentiable in reverse mode (also twice), forward mode and under vmap.
    """
    ct = check_acdc_args(x, a, d, bias)
    t = makhoul_tables(x.shape[-1], ct, x.device)
    v = permute(x.to(ct), t.perm, t.iperm)
    y = permute(acdc_makhoul(v, a.to(ct).index_select(-1, t.perm), d.to(ct)), t.iperm, t.perm)
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype)


def acdc_reference(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias=None) -> torch.Tensor:
    """Plain reference: y = x @ (C^T diag(d) C diag(a))^T + bias with dense float64 matrices. O(n^2)."""
    n = x.shape[-1]
    c = dct_matrix(n, device=x.device)
    w = c.T @ torch.diag(d.double()) @ c @ torch.diag(a.double())
    y = x.double() @ w.T
    if bias is not None:
        y = y + bias.double()
    return y

