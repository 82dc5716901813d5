"""The ACDC operator y = C^T D C (a * x) + bias: forward, analytic gradient and dense reference, in one place.

Notation (see :mod:`torch_acdc.transform`): M is the unnormalised DCT-II and C = diag(s) M the orthonormal
one, so ``C^T D C = M^-1 D M`` (diagonals commute). In the packed spectrum z = w * rfft(P u) the middle
``M^-1 D M`` is a *per-bin real 2x2 diagonal*: ``z' = Re z * d[k] + i Im z * d[n-k]`` (``packed_diagonal``).
With G_in / G_out the gathers into and out of Makhoul order (P and P^T for one layer):

    forward   y = G_out irfft(conj(w) . dp . w . rfft(a_P * G_in x))                 1 rfft + 1 irfft
    (a bias b, in Makhoul order, is added before G_out: on the native path by G_out's pass or, without G_out,
    as rfft(b) inside the bin map)
    backward  zeta = w . rfft(G_out^T grad_y)                                         1 rfft
              grad_d = s^2 * unpack(sum_batch Re/Im(w . rfft(a_P * G_in x)) * Re/Im(zeta))   1 rfft (recompute)
              g = irfft(conj(w) . dp . zeta)  (the middle is symmetric)              1 irfft
              grad_x = G_in^T (a_P * g),  grad_a_P = sum_batch G_in(x) * g
              grad_b = sum_batch G_out^T grad_y  (a column sum of grad_y, then an O(n) gather)

Five FFTs for forward+backward, no division by a or d anywhere, and only x, a_P, d saved for backward (the
input itself: no extra activation memory). The gathers, the diagonal products, the per-bin map and the batch
reductions are single fused passes (:mod:`torch_acdc.kernels`). A stack keeps its layers in Makhoul order and
fuses P^T of one layer, the shuffle and P of the next into one input gather.

Reference: :func:`acdc_reference` (dense float64 matrices), the plain implementation everything is tested
against.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad

from .transform import (
    MakhoulTables,
    check_float_input,
    compute_dtype,
    dct_matrix,
    makhoul_permutation,
    irfft,
    makhoul_tables,
    rfft,
    spectrum,
)
from . import native
from .kernels import add_, diag_sums, gather_mul_sum, gather_scale, spectral_map_

__all__ = ["acdc", "acdc_reference", "acdc_gathered", "permute", "packed_diagonal"]


def packed_diagonal(d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """(n,) diagonal -> (h, 2) real pairs (d[k], d[n-k]) acting on the real view of z; d[n] := 0."""
    return d.index_select(-1, t.pack).reshape(*d.shape[:-1], t.bins, 2) * t.pack_mask


def middle_from_spectrum(z: torch.Tensor, d: torch.Tensor, t: MakhoulTables, pre=None) -> torch.Tensor:
    """M^-1 diag(d) applied to a packed spectrum z = M u (a temporary: overwritten). (..., h) -> (..., n).

    ``pre``: a twiddle still to apply to z first (so z may be a raw rfft output).
    """
    return irfft(spectral_map_(z, pre, packed_diagonal(d, t), t.untwiddle), t.n)


def middle(v: torch.Tensor, d: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """M^-1 diag(d) M in Makhoul order: (..., n) -> (..., n). 1 rfft + 1 irfft + one fused pass over the
    spectrum in place: the only allocations are the two FFT outputs."""
    return middle_from_spectrum(rfft(v), d, t, pre=t.twiddle)


def diag_grad_from_spectra(V: torch.Tensor, zeta: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """s_k^2 * sum_batch (M u)[k] (M g)[k] from V = rfft(P u) (not yet twiddled) and zeta = M g (packed):
    the gradient of <g, M^-1 diag(d) M u> with respect to d. (..., h) x2 -> (n,)."""
    sums = diag_sums(V, zeta, t.twiddle).reshape(t.bins * 2)
    return sums.index_select(-1, t.unpack) * t.scale_sq


def _gather(x, idx):
    return x if idx is None else gather_scale(x, idx, None)


def acdc_forward(x, a_p, d, b_m=None, in_idx=None, out_idx=None):
    """y = G_out(M^-1 diag(d) M (a_P * G_in(x)) + b_m) where G(x) = x[..., idx] (None: no gather).

    With G_in = Makhoul's P and G_out = P^T this is ACDC (b_m: its bias in Makhoul order, or None); a stack
    keeps G_out = None (stays in Makhoul order) and fuses the next layer's G_in with the shuffle.
    x (..., n), a_p, d, b_m (n,). 2 FFTs. Native path: 3 passes, the bias added in the spectrum (no pass).
    """
    t = makhoul_tables(x.shape[-1], x.dtype, x.device)
    if native.usable(x, a_p, d, b_m):
        return _native_forward(x.contiguous(), a_p.contiguous(), d.contiguous(), b_m, in_idx, out_idx, t)
    v = middle(gather_scale(x, in_idx, a_p), d, t)
    return _gather(v if b_m is None else add_(v, b_m), out_idx)


def _native_forward(x, a_p, d, b_m, in_idx, out_idx, t):
    """acdc_forward as one native op (csrc: gather*a, rfft, bin map in place, irfft, in-place output gather:
    3 passes, 3 allocations; the bias rides on the output gather, or without one is added as its spectrum
    rfft(b_m) inside the bin map)."""
    return native.ops().acdc_forward(x, a_p, d, None if b_m is None else b_m.contiguous(), in_idx, out_idx,
                                     t.twiddle_pairs)


def _native_grads(grad_y, x, a_p, d, in_idx, out_inv, needs, t):
    """acdc_grads as one native op: 3 FFTs and 4 passes (gather grad_y; gather*a of x into the same memory;
    grad_d sums and the bin map together; grad_x and grad_a together, in place on irfft's output); the bias
    gradient is a column sum of grad_y, inside the grad_y gather when there is one. Four (rows, n)-sized
    allocations, grad_x among them."""
    grads = native.ops().acdc_backward(grad_y, x, a_p, d, in_idx, out_inv, t.twiddle_pairs, t.unpack,
                                       t.scale_sq, *needs)
    return tuple(g if need else None for g, need in zip(grads, needs))


def acdc_grads(grad_y, x, a_p, d, in_idx=None, in_inv=None, out_inv=None, needs=(True, True, True, False)):
    """Gradients of :func:`acdc_forward` w.r.t. (x, a_p, d, b_m) (None where ``needs`` is False). 3 FFTs.

    zeta = M G_out^T grad_y is shared: grad_d = s^2 sum_batch (M a_P G_in x)(zeta) (1 rfft recomputes the
    forward spectrum from x: nothing but x, a, d is saved), and since the middle is symmetric,
    g = M^-1 D zeta gives grad_x = G_in^T (a_P * g) and grad_a_P = sum_batch G_in(x) * g;
    grad_b_m = sum_batch G_out^T grad_y. Fused kernels where possible; with grad mode on (double backward)
    all plain differentiable torch ops. No division anywhere.
    """
    t = makhoul_tables(x.shape[-1], x.dtype, x.device)
    if native.usable(grad_y, x, a_p, d):
        return _native_grads(grad_y.contiguous(), x.contiguous(), a_p.contiguous(), d.contiguous(), in_idx,
                             out_inv, needs, t)
    grad_x = grad_a = grad_d = grad_b = None
    gy = _gather(grad_y, out_inv)
    if needs[3]:
        grad_b = gy.reshape(-1, t.n).sum(0)
    zeta = spectrum(gy, t)
    v = _gather(x, in_idx) if (needs[1] or needs[2]) else None  # one gather serves both grad_d and grad_a
    if needs[2]:
        grad_d = diag_grad_from_spectra(rfft(v * a_p), zeta, t)
    if needs[0] or needs[1]:
        g = middle_from_spectrum(zeta, d, t)
        if needs[0]:
            grad_x = gather_scale(g, in_inv, a_p if in_inv is None else a_p.index_select(-1, in_inv))
        if needs[1]:
            grad_a = gather_mul_sum(g, v, None)
    return grad_x, grad_a, grad_d, grad_b


class _ACDC(torch.autograd.Function):
    """The ACDC operator with its gathers and bias (see :func:`acdc_forward`). Inputs: x (..., n), a_p (n,),
    d (n,), b_m (n,) or None, then the index tensors in_idx, in_inv, out_idx, out_inv (each None or a
    permutation and its inverse).

    Saves x, a_p, d (and the indices) only. Backward: :func:`acdc_grads` (differentiable again, so double
    backward works); forward mode: the product rule on the bilinear map; vmap: generated.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, a_p, d, b_m, in_idx, in_inv, out_idx, out_inv):
        return acdc_forward(x, a_p, d, b_m, in_idx, out_idx)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, a_p, d, _b_m, *idx = inputs
        ctx.save_for_backward(x, a_p, d, *idx)
        ctx.save_for_forward(x, a_p, d, *idx)

    @staticmethod
    def backward(ctx, grad_y):
        x, a_p, d, in_idx, in_inv, out_idx, out_inv = ctx.saved_tensors
        grads = acdc_grads(grad_y, x, a_p, d, in_idx, in_inv, out_inv, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None)

    @staticmethod
    def jvp(ctx, dx, da, dd, db, *_):
        x, a_p, d, in_idx, _in_inv, out_idx, _out_inv = ctx.saved_tensors
        t = makhoul_tables(x.shape[-1], x.dtype, x.device)
        v = _gather(x, in_idx)
        du = None
        if dx is not None:
            du = _gather(dx, in_idx) * a_p
        if da is not None:
            du = v * da if du is None else du + v * da
        out = middle(du, d, t) if du is not None else torch.zeros_like(v)
        if dd is not None:
            out = out + middle(v * a_p, dd, t)
        if db is not None:
            out = out + db
        return _gather(out, out_idx)


class _ACDCEager(torch.autograd.Function):
    """:class:`_ACDC` in the old ``forward(ctx, ...)`` form, used outside functorch transforms: for a Function
    with ``setup_context`` torch binds the arguments with ``inspect.signature`` on every call (measured
    50-100 us per call, more than the kernels of a small layer). Same forward, backward and jvp."""

    @staticmethod
    def forward(ctx, *inputs):
        _ACDC.setup_context(ctx, inputs, None)
        return _ACDC.forward(*inputs)

    backward = staticmethod(_ACDC.backward)
    jvp = staticmethod(_ACDC.jvp)


def acdc_gathered(x, a_p, d, gather_in=None, gather_out=None, bias_m=None):
    """The ACDC operator with fused gathers and bias: G_out(M^-1 D M (a_p * G_in(x)) + bias_m).

    ``gather_in`` / ``gather_out``: None or (idx, inverse idx); ``bias_m``: None or (n,) in the order of the
    layer's middle (Makhoul order), added before ``gather_out``. Eager: the autograd Function. Under
    torch.compile: the ``torch_acdc::acdc`` custom op (:mod:`torch_acdc.compile_ops`), opaque to the compiler,
    with the same math.
    """
    in_idx, in_inv = gather_in if gather_in is not None else (None, None)
    out_idx, out_inv = gather_out if gather_out is not None else (None, None)
    if torch.compiler.is_compiling():
        return torch.ops.torch_acdc.acdc(x, a_p, d, bias_m, in_idx, in_inv, out_idx, out_inv)
    if torch._C._are_functorch_transforms_active():  # vmap / torch.func: the new-style Function
        return _ACDC.apply(x, a_p, d, bias_m, in_idx, in_inv, out_idx, out_inv)
    if _untracked(x, a_p, d, bias_m):  # inference: no autograd Function at all
        with torch.no_grad():
            return acdc_forward(x, a_p, d, bias_m, in_idx, out_idx)
    return _ACDCEager.apply(x, a_p, d, bias_m, in_idx, in_inv, out_idx, out_inv)


def _untracked(*tensors) -> bool:
    """True when no autodiff can observe this call (outside functorch transforms): no input needs a gradient
    (or grad mode is off) and no forward-mode dual level is open."""
    if forward_ad._current_level >= 0:
        return False
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


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


def check_operator_args(op: str, x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias) -> torch.dtype:
    """Shared checks of a diagonal-operator call (ACDC, AFDF): x real floating with last dimension n = len(a),
    d and bias of length n, n >= 1. Returns the compute dtype. Errors name the expected and given sizes."""
    check_float_input(x, f"{op} input")
    if bias is not None:
        check_float_input(bias, f"{op} bias")
    n = a.shape[0]
    if d.shape[0] != n or (bias is not None and tuple(bias.shape) != (n,)):
        raise ValueError(
            f"{op} a, d and bias must all have size n={n}, got a {tuple(a.shape)}, d {tuple(d.shape)}"
            + (f", bias {tuple(bias.shape)}" if bias is not None else "")
        )
    if x.shape[-1] != n:
        raise ValueError(f"{op} expected input with last dimension {n}, got input of shape {tuple(x.shape)}")
    if n == 0:
        raise ValueError(f"{op} needs n >= 1 features, got 0")
    return compute_dtype(torch.promote_types(x.dtype, a.dtype))


def check_acdc_args(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias) -> torch.dtype:
    """Validate an ACDC call (real 1-D diagonals); return the compute dtype."""
    for name, p in (("a", a), ("d", d)):
        check_float_input(p, f"ACDC diagonal {name}")
        if p.dim() != 1:
            raise ValueError(f"ACDC {name} must be 1-D of size n, got shape {tuple(p.shape)}")
    return check_operator_args("ACDC", x, a, d, bias)


def acdc(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = idct(d * dct(a * x)) + bias along the last dimension.

    x: (..., n) real floating; a, d, bias: (n,). Returns x's dtype (fp16/bf16 are computed in float32).
    O(n log n) per row forward and backward (5 real FFTs in total); saves only the input (in Makhoul order),
    a and d for backward. Differentiable in reverse mode (also twice), forward mode and under vmap.
    """
    ct = check_acdc_args(x, a, d, bias)
    perm, iperm = makhoul_permutation(x.shape[-1], x.device)
    b_m = bias.to(ct).index_select(-1, perm) if bias is not None else None
    y = acdc_gathered(x.to(ct), a.to(ct).index_select(-1, perm), d.to(ct), (perm, iperm), (iperm, perm), b_m)
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

