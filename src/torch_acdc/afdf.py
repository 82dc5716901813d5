"""AFDF, the paper's complex SELL: y = Re(F^-1 D F A x) + bias, with analytic gradients, and its layers.

F is the DFT, A = diag(a) and D = diag(d) are *complex* diagonals, the input x and the output y are real
(the output is the real part; for a real A and a Hermitian d, d[k] = conj(d[-k]), the imaginary part is 0
anyway). Complex numbers are stored as real pairs: ``a``, ``d`` have shape (n, 2) = ``view_as_real`` of the
complex diagonal, so parameters are ordinary real tensors for optimisers and ``torch.compile``; the
functional also accepts complex (n,) tensors. The normalisation of F cancels in F^-1 D F.

Real FFTs: write ``a = a_r + i a_i`` and stack the two real signals ``s = (a_r x, a_i x)``. With
``S = rfft(s)`` (two half spectra, h = n//2 + 1 bins) and, per bin k < h,

    p[k] = (d[k] + conj(d[-k])) / 2        (the Hermitian part of d)
    q[k] = i (d[k] - conj(d[-k])) / 2      (i times its anti-Hermitian part)

the output is ``y = irfft(p * S_r + q * S_i)``, i.e. Re(ifft(d * fft(a x))) without any complex-length-n FFT.
Costs per row (rfft-sized FFTs; the two-signal transforms are one batched call each):

    forward   rfft of (a_r x, a_i x), irfft                                          3 FFTs
    backward  G = rfft(g); r = irfft(conj(p) G, conj(q) G)  (r = F^-1 conj(D) F g)      3 FFTs
              grad_x = a_r r_r + a_i r_i,  grad_a = sum_batch x r
              grad_d = fft(g) * conj(fft(a x)) / n, assembled from G and S            +2 FFTs (S recomputed;
                                                                                         only if d needs one)

8 FFTs for forward+backward with only (x, a, d) saved (ACDC: 5); no division by a or d anywhere. Double
backward goes through the differentiable torch ops of the backward; forward mode and vmap are explicit.

In eager mode on CPU (float32/float64, outside grad mode and functorch transforms, see
:func:`torch_acdc.dispatch.kernel`) the memory passes between the FFTs are fused native kernels
(``torch.ops.torch_acdc_native.afdf_*``, see :mod:`torch_acdc.native`): forward stack -> rfft -> mix -> irfft (2 passes); backward rfft(g), stack -> rfft,
one pass for the grad_d sums that overwrites S with (conj(p) G, conj(q) G), irfft, one pass for grad_x and
grad_a together (3 passes). The pure-torch path below stays the reference and the fallback.

Reference: :func:`afdf_reference` (dense complex128 DFT matrices). Layers: :class:`AFDF` and
:class:`StackedAFDF` share all their module code with :class:`~torch_acdc.layers.ACDC` and
:class:`~torch_acdc.layers.StackedACDC` (see :mod:`torch_acdc.layers`).
"""
from __future__ import annotations

import torch

from . import dispatch, native, tables
from .functional import check_operator_args
from .layers import DiagonalLayer, DiagonalStack, INITS, init_diagonals_
from .transform import check_float_input, irfft, rfft

__all__ = ["afdf", "afdf_reference", "AFDF", "StackedAFDF", "init_complex_diagonals_", "as_real_pairs"]


# ---- the operator on real pairs ----

@tables.cached
def _mirror_index(n: int, device: torch.device) -> torch.Tensor:
    """(h,) indices (-k) mod n for the bins k < h = n//2 + 1."""
    return ((-torch.arange(n // 2 + 1)) % n).to(device)


@tables.cached
def _grad_d_index(n: int, device: torch.device) -> torch.Tensor:
    """(n,) index into cat(first (h), second (h)) giving grad_d[j]: j for j < h, else h + (n - j)."""
    j = torch.arange(n)
    h = n // 2 + 1
    return torch.where(j < h, j, h + (n - j)).to(device)


def spectral_weights(d: torch.Tensor) -> torch.Tensor:
    """(n, 2) real pairs of d -> (2, h) complex (p, q): the weights of the two half spectra. O(n)."""
    n = d.shape[0]
    m = d.index_select(0, _mirror_index(n, d.device))  # d[-k] as pairs, (h, 2)
    dk = d[: n // 2 + 1]
    p = torch.stack([dk[:, 0] + m[:, 0], dk[:, 1] - m[:, 1]], -1) * 0.5
    q = torch.stack([-(dk[:, 1] + m[:, 1]), dk[:, 0] - m[:, 0]], -1) * 0.5
    return torch.view_as_complex(torch.stack([p, q]))


# The large elementwise passes below avoid two slow paths of CPU kernels (measured 5-10x slower): a strided
# (n, 2) operand (so a is used as a contiguous (2, n) a_t) and lazily conjugated complex operands (so
# conjugates of large tensors are never formed; small ones are resolved).

def spectra(x: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """S = rfft((a_r x, a_i x)): x (..., n), a_t (2, n) -> (..., 2, h) complex. One batched rfft."""
    return rfft(x.unsqueeze(-2) * a_t)


def mix(s: torch.Tensor, pq: torch.Tensor, n: int) -> torch.Tensor:
    """irfft(p S_r + q S_i): (..., 2, h) -> (..., n). One irfft."""
    return irfft(torch.addcmul(s[..., 0, :] * pq[0], s[..., 1, :], pq[1]), n)


def _sum_leading(t: torch.Tensor) -> torch.Tensor:
    """Sum a (..., 2, m) tensor over all leading dimensions -> (2, m)."""
    return t.reshape(-1, *t.shape[-2:]).sum(0)


def _pairs_t(a: torch.Tensor) -> torch.Tensor:
    """(n, 2) real pairs -> contiguous (2, n) rows (real parts, imaginary parts)."""
    return a.T.contiguous()


def _real(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z)


def _native_forward(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The forward with the fused kernels (contiguous inputs): stack, rfft, mix, irfft. 2 passes, 4 buffers."""
    k = native.ops()
    z = k.afdf_mix(_real(rfft(k.afdf_stack(x, a))), d)  # the stack and S are freed before the irfft
    return irfft(torch.view_as_complex(z), x.shape[-1])


def _native_grads(grad_y, x, a, d, needs):
    """The gradients with the fused kernels (contiguous inputs). With grad_d: stack, rfft (S), G = rfft(grad_y),
    one pass for the grad_d sums that also overwrites S with (conj(p) G, conj(q) G), irfft, one pass for
    grad_x and grad_a (3 passes, 5 FFTs). Without: rfft, one pass, irfft, one pass (2 passes, 3 FFTs)."""
    k = native.ops()
    n = x.shape[-1]
    need_xa = needs[0] or needs[1]
    grad_x = grad_a = grad_d = None
    # Each temporary is released as soon as it is consumed, and S is made before G (lower peak memory).
    if needs[2]:
        s = rfft(k.afdf_stack(x, a))
        grad_d = k.afdf_grad_spectra_sums_(_real(rfft(grad_y)), _real(s), d, need_xa)  # s: backward spectra
    elif need_xa:
        s = torch.view_as_complex(k.afdf_grad_spectra(_real(rfft(grad_y)), d))
    if need_xa:
        r = irfft(s, n)
        del s
        gx, ga = k.afdf_input_grads(r, x, a, needs[0], needs[1])
        grad_x, grad_a = (gx if needs[0] else None), (ga if needs[1] else None)
    return grad_x, grad_a, grad_d


def _afdf_forward(x, a, d):
    """y = Re(F^-1 D F A x) on the kernel :func:`torch_acdc.dispatch.kernel` chooses."""
    if dispatch.kernel(x, a, d, op="afdf") == "native":
        return _native_forward(x.contiguous(), a.contiguous(), d.contiguous())
    return mix(spectra(x, _pairs_t(a)), spectral_weights(d), x.shape[-1])


def afdf_pairs(x, a, d):
    """The AFDF operator on real pairs, by :func:`torch_acdc.dispatch.route`: a direct kernel call when no
    gradient can be observed, else the autograd Function (the compiled route traces it too)."""
    if dispatch.route(x, a, d) == "inference":
        return _afdf_forward(x, a, d)
    return _AFDF.apply(x, a, d)


class _AFDF(torch.autograd.Function):
    """y = Re(F^-1 D F A x) for x (..., n) real, a and d (n, 2) real pairs of complex diagonals.

    Forward and backward take the fused native kernels when :func:`torch_acdc.dispatch.kernel` says so, else
    the pure-torch path below (the reference: CUDA, vmap, double backward, torch.compile)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, a, d):
        return _afdf_forward(x, a, d)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad_y):
        x, a, d = ctx.saved_tensors
        if dispatch.kernel(grad_y, x, a, d, op="afdf") == "native":
            return _native_grads(grad_y.contiguous(), x.contiguous(), a.contiguous(), d.contiguous(),
                                 ctx.needs_input_grad)
        n = x.shape[-1]
        a_t = _pairs_t(a)
        g = rfft(grad_y)  # (..., h)
        grad_x = grad_a = grad_d = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # r = F^-1 D^H F g, as (Re, Im) rows: (..., 2, n)
            r = irfft(g.unsqueeze(-2) * spectral_weights(d).conj().resolve_conj(), n)
            if ctx.needs_input_grad[0]:
                grad_x = torch.addcmul(r[..., 0, :] * a_t[0], r[..., 1, :], a_t[1])
            if ctx.needs_input_grad[1]:
                grad_a = _sum_leading(x.unsqueeze(-2) * r).T.contiguous()
        if ctx.needs_input_grad[2]:
            # grad_d[k] = G[k] conj(Z[k]) / n with Z = fft(a x) = S_r + i S_i and G = fft(g) Hermitian:
            # bins k < h give G (conj S_r - i conj S_i); the mirrored bins n - k give conj(G) (S_r - i S_i).
            cross = _sum_leading(g.conj().resolve_conj().unsqueeze(-2) * spectra(x, a_t)).conj()  # sum G conj(S)
            first = cross[0] - 1j * cross[1]
            second = cross[0].conj() - 1j * cross[1].conj()
            full = torch.cat([first, second]).index_select(0, _grad_d_index(n, x.device))
            grad_d = torch.view_as_real(full) / n
        return grad_x, grad_a, grad_d

    @staticmethod
    def jvp(ctx, dx, da, dd):
        x, a, d = ctx.saved_tensors
        n = x.shape[-1]
        out = None
        if dx is not None or da is not None:
            if dx is None:
                s = x.unsqueeze(-2) * _pairs_t(da)
            elif da is None:
                s = dx.unsqueeze(-2) * _pairs_t(a)
            else:
                s = torch.addcmul(dx.unsqueeze(-2) * _pairs_t(a), x.unsqueeze(-2), _pairs_t(da))
            out = mix(rfft(s), spectral_weights(d), n)
        if dd is not None:
            term = mix(spectra(x, _pairs_t(a)), spectral_weights(dd), n)
            out = term if out is None else out + term
        return out if out is not None else torch.zeros_like(x)


def as_real_pairs(t: torch.Tensor, name: str) -> torch.Tensor:
    """A complex (n,) diagonal, or its real pairs (n, 2), as real pairs (n, 2). Differentiable."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"AFDF diagonal {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        if t.dim() != 1:
            raise ValueError(f"AFDF complex diagonal {name} must be 1-D of size n, got shape {tuple(t.shape)}")
        return torch.view_as_real(t)
    check_float_input(t, f"AFDF diagonal {name}")
    if t.dim() != 2 or t.shape[-1] != 2:
        raise ValueError(
            f"AFDF diagonal {name} must be complex of shape (n,) or real pairs of shape (n, 2), "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )
    return t


def check_afdf_args(x, a, d, bias) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Validate an AFDF call; return a and d as real pairs (n, 2) and the compute dtype."""
    a, d = as_real_pairs(a, "a"), as_real_pairs(d, "d")
    return a, d, check_operator_args("AFDF", x, a, d, bias)


def afdf(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = Re(ifft(d * fft(a * x))) + bias along the last dimension (the paper's AFDF with real input/output).

    x: (..., n) real floating. a, d: complex (n,) or their real pairs (n, 2) (``torch.view_as_real``);
    bias: real (n,). Returns x's dtype (fp16/bf16 computed in float32). O(n log n) per row: 3 real FFTs
    forward, 5 backward (3 when d needs no gradient); saves only x, a and d. Differentiable in reverse
    mode (also twice), forward mode and under vmap.
    """
    a, d, ct = check_afdf_args(x, a, d, bias)
    y = afdf_pairs(x.to(ct), a.to(ct), d.to(ct))
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype)


def dft_matrix(n: int, device=None) -> torch.Tensor:
    """Reference: the dense unitary DFT matrix F (n, n) complex128, F[k, m] = exp(-2 pi i k m / n) / sqrt(n)."""
    k = torch.arange(n, dtype=torch.float64)
    angle = -2 * torch.pi * torch.outer(k, k).remainder(n) / n
    return (torch.polar(torch.ones(n, n, dtype=torch.float64), angle) / n ** 0.5).to(device)


def afdf_reference(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias=None) -> torch.Tensor:
    """Plain reference: y = Re(x @ (F^H diag(d) F diag(a))^T) + bias with dense complex128 matrices. O(n^2)."""
    a = torch.view_as_complex(as_real_pairs(a, "a").double().contiguous())
    d = torch.view_as_complex(as_real_pairs(d, "d").double().contiguous())
    f = dft_matrix(x.shape[-1], device=x.device)
    w = f.conj().T @ torch.diag(d) @ f @ torch.diag(a)
    y = (x.double().to(torch.complex128) @ w.T).real
    if bias is not None:
        y = y + bias.double()
    return y


# ---- layers ----

def init_complex_diagonals_(t: torch.Tensor, init: str) -> torch.Tensor:
    """In-place init of complex diagonals stored as real pairs (..., 2).

    'paper': real part N(1, 0.01^2), imaginary part N(0, 0.01^2) (near the identity, like ACDC);
    'identity': 1 + 0i; 'uniform': real and imaginary parts U(-1, 1).
    """
    if t.shape[-1:] != (2,):
        raise ValueError(f"complex diagonals are stored as real pairs (..., 2), got shape {tuple(t.shape)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: expected one of {INITS}")
    with torch.no_grad():
        if init == "uniform":
            return t.uniform_(-1.0, 1.0)
        init_diagonals_(t[..., 0], init)
        if init == "paper":
            t[..., 1].normal_(0.0, 1e-2)
        else:
            t[..., 1].zero_()
    return t


class AFDF(DiagonalLayer):
    """One AFDF layer y = Re(F^-1 diag(d) F diag(a) x) + bias, F the DFT, a and d complex.

    Input (..., features) -> output (..., features), real. Parameters ``a`` and ``d`` are the complex
    diagonals as real pairs of shape (features, 2) (``torch.view_as_complex(layer.a)`` is the complex view),
    ``bias`` (features,): 4n (+n) real parameters, O(n log n) per row. Same constructor, ``init`` names
    (see :func:`init_complex_diagonals_`), ``to_dense`` and ``acdc_diagonals`` as
    :class:`~torch_acdc.layers.ACDC`.
    """

    diagonal_shape = (2,)
    init_diagonal_ = staticmethod(init_complex_diagonals_)
    operator = staticmethod(afdf)


class StackedAFDF(DiagonalStack):
    """A deep complex SELL: ``depth`` AFDF layers with a permutation (and optional activation) between layers.

    Exactly the conventions of :class:`~torch_acdc.layers.StackedACDC` (same constructor, zero-padding to
    N = max(in_features, out_features) and truncation, bias / activation / permutation between layers,
    permutation buffers, ``to_dense``, errors), with complex diagonals a, d stored as real pairs of shape
    (depth, N, 2). Each layer's output is real (the real part), so activations act on real values.
    Cost O(depth * N log N) per row, 8 real FFTs per layer for forward+backward.
    """

    diagonal_shape = (2,)
    init_diagonal_ = staticmethod(init_complex_diagonals_)

    def layer(self, h: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return afdf_pairs(h, a, d)
