"""The ACDC operator y = C^T D C (a * x) + bias: forward, analytic gradient and dense reference, in one place.

Notation (see :mod:`torch_acdc.transform`): M is the unnormalised DCT-II and C = diag(s) M the orthonormal
one, so ``C^T D C = M^-1 D M`` (diagonals commute). In the packed spectrum z = w * rfft(P u) the middle
``M^-1 D M`` is a *per-bin real 2x2 diagonal*: ``z' = Re z * d[k] + i Im z * d[n-k]`` (``packed_diagonal``).
With G_in / G_out the gathers into and out of Makhoul order (P and P^T for one layer):

    forward   y = G_out irfft(conj(w) . dp . w . rfft(a_P * G_in x))                 1 rfft + 1 irfft
    (a bias b, in Makhoul order, is added before G_out: on the native path by G_out's pass or, without G_out,
    as rfft(b) inside the bin map)
    backward  zeta = w . rfft(G_out^T grad_y)                                         1 rfft
              grad_d = s^2 * unpack(sum_batch Re/Im(w . V) * Re/Im(zeta))   V = rfft(a_P * G_in x) kept
                                                                              from the forward (or 1 rfft)
              g = irfft(conj(w) . dp . zeta)  (the middle is symmetric)              1 irfft
              grad_x = G_in^T (a_P * g),  grad_a_P = sum_batch G_in(x) * g
              grad_b = sum_batch G_out^T grad_y  (a column sum of grad_y, then an O(n) gather)

Four FFTs for forward+backward (five with ``dispatch.keeping_spectrum(False)``), no division by a or d
anywhere; saved for backward: x, a, d and V (one complex (rows, n//2 + 1) tensor, about x's size). The
gathers, the diagonal products, the per-bin map and the batch reductions are single fused passes (native:
``csrc/cpu``; pure torch: :mod:`torch_acdc.passes`). Which runs is :mod:`torch_acdc.dispatch`'s decision. A stack keeps its layers in Makhoul order and
fuses P^T of one layer, the shuffle and P of the next into one input gather.

Reference: :func:`acdc_reference` (dense float64 matrices), the plain implementation everything is tested
against.
"""
from __future__ import annotations

import torch

from .transform import (
    MakhoulTables,
    check_float_input,
    compute_dtype,
    dct_matrix,
    makhoul_permutation,
    irfft,
    makhoul_tables,
    peek_makhoul_tables,
    rfft,
    spectrum,
)
from . import dispatch, native
from .passes import add_, diag_sums, gather_mul_sum, gather_scale, spectral_map_

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


def diag_grad_from_spectra(V: torch.Tensor, zeta: torch.Tensor, t: MakhoulTables, saved: bool = False) -> torch.Tensor:
    """s_k^2 * sum_batch (M u)[k] (M g)[k] from V = rfft(P u) (not yet twiddled) and zeta = M g (packed):
    the gradient of <g, M^-1 diag(d) M u> with respect to d. (..., h) x2 -> (n,). ``saved``: V is a kept
    forward spectrum (never written; a backward may run twice)."""
    sums = diag_sums(V * t.twiddle if saved else V, zeta, None if saved else t.twiddle).reshape(t.bins * 2)
    return sums.index_select(-1, t.unpack) * t.scale_sq


def _gather(x, idx):
    return x if idx is None else gather_scale(x, idx, None)


def _param(p, idx):
    """A parameter in the layer's middle order: p[idx] (None idx: p itself)."""
    return p if (p is None or idx is None) else p.index_select(-1, idx)


def acdc_forward(x, a, d, b=None, p_idx=None, in_idx=None, out_idx=None, keep=False):
    """(y, V): y = G_out(M^-1 diag(d) M (a_p * G_in(x)) + b_p) where G(x) = x[..., idx] (None: no gather) and
    a_p = a[p_idx], b_p = b[p_idx] (the layer's parameters in its middle's order; None: as given).

    With G_in = Makhoul's P, G_out = P^T and p_idx = P this is ACDC; a stack keeps G_out = None (stays in
    Makhoul order) and fuses the next layer's G_in with the shuffle. x (..., n), a, d, b (n,). 2 FFTs.
    ``keep``: also return the raw forward spectrum V = rfft(a_p * G_in x) (else V is None), which spares
    the backward one FFT. The kernel is :func:`torch_acdc.dispatch.kernel`'s choice.
    """
    t = makhoul_tables(x.shape[-1], x.dtype, x.device)
    if dispatch.kernel(x, a, d, b) == "native":
        y, v = native.ops().acdc_forward(x, a, d, b, p_idx, in_idx, out_idx, t.twiddle_pairs, keep)
        return y, (v if keep and v.numel() else None)
    a_p, b_p = _param(a, p_idx), _param(b, p_idx)
    z = rfft(gather_scale(x, in_idx, a_p))
    v = z.clone() if keep else None
    y = middle_from_spectrum(z, d, t, pre=t.twiddle)
    return _gather(y if b_p is None else add_(y, b_p), out_idx), v


def acdc_grads(grad_y, x, a, d, v=None, p_idx=None, p_inv=None, in_idx=None, in_inv=None, out_inv=None,
               needs=(True, True, True, False)):
    """Gradients of :func:`acdc_forward` w.r.t. (x, a, d, b) (None where ``needs`` is False). 3 FFTs, or 2
    given the kept forward spectrum ``v`` (used only when the backward itself is not differentiated).

    zeta = M G_out^T grad_y is shared: grad_d = s^2 sum_batch (M a_p G_in x)(zeta), and since the middle is
    symmetric, g = M^-1 D zeta gives grad_x = G_in^T (a_p * g) and grad_a_p = sum_batch G_in(x) * g;
    grad_b_p = sum_batch G_out^T grad_y; grad_a = grad_a_p[p_inv] (and the same for b). Native kernels when
    :func:`torch_acdc.dispatch.kernel` allows; with grad mode on (double backward) plain differentiable torch
    ops. No division anywhere.
    """
    t = makhoul_tables(x.shape[-1], x.dtype, x.device)
    if dispatch.kernel(grad_y, x, a, d) == "native":
        grads = native.ops().acdc_backward(grad_y, x, a, d, v, p_idx, in_idx, out_inv, t.twiddle_pairs, t.unpack,
                                           t.scale_sq, *needs)
        return tuple(g if need else None for g, need in zip(grads, needs))
    if torch.is_grad_enabled():
        v = None  # a differentiated backward recomputes the spectrum from x, a (V's own dependencies)
    a_p = _param(a, p_idx)
    grad_x = grad_a = grad_d = grad_b = None
    gy = _gather(grad_y, out_inv)
    if needs[3]:
        grad_b = _param(gy.reshape(-1, t.n).sum(0), p_inv)
    zeta = spectrum(gy, t)
    u = _gather(x, in_idx) if (needs[1] or (needs[2] and v is None)) else None
    if needs[2]:
        grad_d = diag_grad_from_spectra(rfft(u * a_p), zeta, t) if v is None else diag_grad_from_spectra(v, zeta, t, True)
    if needs[0] or needs[1]:
        g = middle_from_spectrum(zeta, d, t)
        if needs[0]:
            grad_x = gather_scale(g, in_inv, a_p if in_inv is None else a_p.index_select(-1, in_inv))
        if needs[1]:
            grad_a = _param(gather_mul_sum(g, u, None), p_inv)
    return grad_x, grad_a, grad_d, grad_b


class _ACDC(torch.autograd.Function):
    """The ACDC operator with its parameter order, gathers and bias (see :func:`acdc_forward`), for the
    ``functorch`` route. Inputs: x (..., n), a (n,), d (n,), b (n,) or None, then the index tensors p_idx,
    p_inv, in_idx, in_inv, out_idx, out_inv (each None or a permutation / its inverse).

    Saves x, a, d (and the indices) only. Backward: :func:`acdc_grads` (differentiable again, so double
    backward works); forward mode: the product rule on the bilinear map; vmap: generated.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, a, d, b, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv):
        return acdc_forward(x, a, d, b, p_idx, in_idx, out_idx)[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, a, d, _b, *idx = inputs
        ctx.save_for_backward(x, a, d, None, *idx)
        ctx.save_for_forward(x, a, d, None, *idx)

    @staticmethod
    def backward(ctx, grad_y):
        x, a, d, v, p_idx, p_inv, in_idx, in_inv, _out_idx, out_inv = ctx.saved_tensors
        grads = acdc_grads(grad_y, x, a, d, v, p_idx, p_inv, in_idx, in_inv, out_inv, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None, None, None)

    @staticmethod
    def jvp(ctx, dx, da, dd, db, *_):
        x, a, d, _v, p_idx, _p_inv, in_idx, _in_inv, out_idx, _out_inv = ctx.saved_tensors
        t = makhoul_tables(x.shape[-1], x.dtype, x.device)
        u = _gather(x, in_idx)
        a_p = _param(a, p_idx)
        du = None
        if dx is not None:
            du = _gather(dx, in_idx) * a_p
        if da is not None:
            du = u * _param(da, p_idx) if du is None else du + u * _param(da, p_idx)
        out = middle(du, d, t) if du is not None else torch.zeros_like(u)
        if dd is not None:
            out = out + middle(u * a_p, dd, t)
        if db is not None:
            out = out + _param(db, p_idx)
        return _gather(out, out_idx)


class _ACDCEager(torch.autograd.Function):
    """:class:`_ACDC` in the old ``forward(ctx, ...)`` form, for the ``autograd`` route (for a Function with
    ``setup_context`` torch binds the arguments with ``inspect.signature`` on every call, 50-100 us). Keeps
    the forward spectrum for the backward when d needs a gradient (:func:`torch_acdc.dispatch.keep_spectrum`).
    """

    @staticmethod
    def forward(ctx, x, a, d, b, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv):
        keep = ctx.needs_input_grad[2] and dispatch.keep_spectrum()
        y, v = acdc_forward(x, a, d, b, p_idx, in_idx, out_idx, keep)
        ctx.save_for_backward(x, a, d, v, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv)
        ctx.save_for_forward(x, a, d, v, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv)
        return y

    backward = staticmethod(_ACDC.backward)
    jvp = staticmethod(_ACDC.jvp)


def acdc_gathered(x, a, d, gather_in=None, gather_out=None, bias=None, param=None):
    """The ACDC operator with fused gathers and bias: G_out(M^-1 D M (a_p * G_in(x)) + b_p).

    ``gather_in`` / ``gather_out`` / ``param``: None or (idx, inverse idx); a_p = a[param idx] and
    b_p = bias[param idx] put the parameters into the middle's (Makhoul) order inside the kernel. The route
    (compiled custom op, functorch Function, direct inference call, eager Function) is
    :func:`torch_acdc.dispatch.route`'s choice.
    """
    p_idx, p_inv = param if param is not None else (None, None)
    in_idx, in_inv = gather_in if gather_in is not None else (None, None)
    out_idx, out_inv = gather_out if gather_out is not None else (None, None)
    r = dispatch.route(x, a, d, bias)
    if r == "inference":
        return acdc_forward(x, a, d, bias, p_idx, in_idx, out_idx)[0]
    if r == "autograd":
        return _ACDCEager.apply(x, a, d, bias, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv)
    if r == "functorch":
        return _ACDC.apply(x, a, d, bias, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv)
    return torch.ops.torch_acdc.acdc(x, a, d, bias, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv)


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
    if dispatch.route(x) in ("compiled", "inference"):
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
    if a.device != x.device or d.device != x.device or (bias is not None and bias.device != x.device):
        raise ValueError(f"{op} parameters must be on the input's device {x.device}, got a on {a.device}, d on "
                         f"{d.device}" + (f", bias on {bias.device}" if bias is not None else ""))
    return compute_dtype(torch.promote_types(x.dtype, a.dtype))


def check_acdc_args(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias) -> torch.dtype:
    """Validate an ACDC call (real 1-D diagonals); return the compute dtype."""
    for name, p in (("a", a), ("d", d)):
        check_float_input(p, f"ACDC diagonal {name}")
        if p.dim() != 1:
            raise ValueError(f"ACDC {name} must be 1-D of size n, got shape {tuple(p.shape)}")
    return check_operator_args("ACDC", x, a, d, bias)


_PLAIN = (torch.float32, torch.float64)


def _plain_call(x, a, d, b) -> MakhoulTables | None:
    """The tables of a call that needs no checks, conversion or tracing care (plain eager tensors of one
    float32/float64 dtype on one device, matching 1-D parameters, tables already built), else None: the
    full path then checks (and names whatever is wrong), converts and builds."""
    if type(x) is not torch.Tensor or x.dim() == 0:
        return None
    dt, dev, n = x.dtype, x.device, x.shape[-1]
    if (dt not in _PLAIN or a.dtype != dt or d.dtype != dt or a.dim() != 1 or a.shape[0] != n or d.shape != a.shape
            or a.device != dev or d.device != dev or n == 0):
        return None
    if b is not None and (b.dtype != dt or b.shape != a.shape or b.device != dev):
        return None
    return peek_makhoul_tables(n, dt, dev)


def acdc(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = idct(d * dct(a * x)) + bias along the last dimension.

    x: (..., n) real floating; a, d, bias: (n,). Returns x's dtype (fp16/bf16 are computed in float32).
    O(n log n) per row forward and backward (4 real FFTs in total with the kept forward spectrum, 5 without);
    saves the input, a, d and the forward spectrum for backward. Differentiable in reverse mode (also twice),
    forward mode and under vmap. One native op call per direction on CPU; an inference call on plain
    float32/float64 CPU tensors goes straight to it.
    """
    t = _plain_call(x, a, d, bias)
    if t is not None and dispatch.native_inference(x, a, d, bias):
        return _NATIVE_FORWARD(x, a, d, bias, t.perm, t.perm, t.iperm, t.twiddle_pairs, False)[0]
    if t is None:  # checks (naming what is wrong), low precision computed in float32 (.to: no copy otherwise)
        ct = check_acdc_args(x, a, d, bias)
        t = makhoul_tables(x.shape[-1], ct, x.device)
        xc, a, d, bias = x.to(ct), a.to(ct), d.to(ct), None if bias is None else bias.to(ct)
    else:
        xc = x
    y = acdc_gathered(xc, a, d, (t.perm, t.iperm), (t.iperm, t.perm), bias, (t.perm, t.iperm))
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _native_forward_op(*args):
    """The native forward op's default overload (bound on first use: a direct call skips overload lookup)."""
    global _NATIVE_FORWARD
    _NATIVE_FORWARD = native.ops().acdc_forward.default
    return _NATIVE_FORWARD(*args)


_NATIVE_FORWARD = _native_forward_op


def acdc_reference(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias=None) -> torch.Tensor:
    """Plain reference: y = x @ (C^T diag(d) C diag(a))^T + bias with dense float64 matrices. O(n^2)."""
    n = x.shape[-1]
    c = dct_matrix(n, device=x.device)
    w = c.T @ torch.diag(d.double()) @ c @ torch.diag(a.double())
    y = x.double() @ w.T
    if bias is not None:
        y = y + bias.double()
    return y


from . import compile_ops  # noqa: E402,F401 - registers torch_acdc::acdc for the compiled route
