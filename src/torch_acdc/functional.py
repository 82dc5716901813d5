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
    makhoul_permutation,
    makhoul_tables,
    scale_,
    spectrum,
)

__all__ = ["acdc", "acdc_reference", "permute", "acdc_makhoul", "packed_diagonal"]


def packed_diagonal(d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """(n,) diagonal -> (h, 2) real pairs (d[k], d[n-k]) acting on the real view of z; d[n] := 0."""
    return d.index_select(-1, t.pack).reshape(*d.shape[:-1], t.bins, 2) * t.pack_sign.abs()


def middle_from_spectrum(z: torch.Tensor, d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """M^-1 diag(d) applied to a packed spectrum z = M u (a temporary: overwritten). (..., h) -> (..., n)."""
    zr = scale_(torch.view_as_real(z), packed_diagonal(d, t))
    return inverse_spectrum(torch.view_as_complex(zr), t, overwrite=True)


def middle(v: torch.Tensor, d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """M^-1 diag(d) M in Makhoul order: (..., n) -> (..., n). 1 rfft + 1 irfft + 3 elementwise passes
    applied in place: the only allocations are the two FFT outputs."""
    return middle_from_spectrum(spectrum(v, t), d, t)


def _sum_leading(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).sum(0)


def diag_grad_from_spectra(z: torch.Tensor, zeta: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """s_k^2 * sum_batch (M u)[k] (M g)[k] from the packed spectra z = M u, zeta = M g: the gradient of
    <g, M^-1 diag(d) M u> with respect to d. (..., h) x2 -> (n,)."""
    prod = torch.view_as_real(z) * torch.view_as_real(zeta)
    prod = prod.reshape(-1, t.bins * 2).sum(0)
    return prod.index_select(-1, t.unpack) * t.scale.square()


def acdc_makhoul_math(v: torch.Tensor, a_p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """y_P = M^-1 diag(d) M (a_P * v), all in Makhoul order. v (..., n); a_p, d (n,). 2 FFTs."""
    t = makhoul_tables(v.shape[-1], v.dtype, v.device)
    return middle(v * a_p, d, t)


def acdc_makhoul_grads(grad_y, v, a_p, d, needs=(True, True, True)):
    """Gradients of y_P = M^-1 D M (a_P * v) w.r.t. (v, a_P, d) (None where ``needs`` is False). 3 FFTs.

    zeta = M grad_y is shared: grad_d = s^2 sum_batch (M a_P v)(zeta) (1 rfft recomputes M a_P v), and since
    the middle is symmetric, g = M^-1 D zeta gives grad_v = a_P * g and grad_a_P = sum_batch v * g.
    Written with differentiable torch ops (double backward works); no division anywhere.
    """
    t = makhoul_tables(v.shape[-1], v.dtype, v.device)
    grad_v = grad_a = grad_d = None
    zeta = spectrum(grad_y, t)
    if needs[2]:
        grad_d = diag_grad_from_spectra(spectrum(v * a_p, t), zeta, t)
    if needs[0] or needs[1]:
        g = middle_from_spectrum(zeta, d, t)
        if needs[0]:
            grad_v = g * a_p
        if needs[1]:
            grad_a = _sum_leading(g * v)
    return grad_v, grad_a, grad_d


class _ACDCMakhoul(torch.autograd.Function):
    """y_P = M^-1 D M (a_P * v) with v, a_P, y_P in Makhoul order. Inputs v (..., n), a_P (n,), d (n,).

    Saves (v, a_P, d) only. Backward: :func:`acdc_makhoul_grads` (differentiable again, so double
    backward works); forward mode: the product rule on the bilinear map; vmap: generated.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(v, a_p, d):
        return acdc_makhoul_math(v, a_p, d)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        v, a_p, d = ctx.saved_tensors
        return acdc_makhoul_grads(grad_y, v, a_p, d, ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx, dv, da, dd):
        v, a_p, d = ctx.saved_tensors
        t = makhoul_tables(v.shape[-1], v.dtype, v.device)
        du = None
        if dv is not None:
            du = dv * a_p
        if da is not None:
            du = v * da if du is None else du + v * da
        out = middle(du, d, t) if du is not None else torch.zeros_like(v)
        if dd is not None:
            out = out + middle(v * a_p, dd, t)
        return out


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
    if torch.compiler.is_compiling():
        return x.index_select(-1, idx)  # the compiler derives (and fuses) the backward itself
    return _Permute.apply(x, idx, inv)


def acdc_makhoul(v: torch.Tensor, a_p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The ACDC middle on inputs already in Makhoul order (for fused stacks). (..., n) -> (..., n).

    Eager: the autograd Function. Under torch.compile: the ``torch_acdc::acdc_makhoul`` custom op
    (:mod:`torch_acdc.compile_ops`), opaque to the compiler, with the same backward formula.
    """
    if torch.compiler.is_compiling():
        return torch.ops.torch_acdc.acdc_makhoul(v, a_p, d)
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
    perm, iperm = makhoul_permutation(x.shape[-1], x.device)
    v = permute(x.to(ct), perm, iperm)
    y = permute(acdc_makhoul(v, a.to(ct).index_select(-1, perm), d.to(ct)), iperm, perm)
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

