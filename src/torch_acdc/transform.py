"""The orthonormal DCT-II / DCT-III on one real FFT, its gradient, and its reference.

Everything in torch-acdc is built on Makhoul's algorithm. For a length-n signal u, reorder it as
``v = u[perm]`` (even samples, then odd samples reversed), take ``V = rfft(v)`` (h = n//2 + 1 bins) and
twiddle ``z = w * V`` with ``w[k] = exp(-i*pi*k / 2n)``. Then ``z`` *is* the unnormalised DCT-II
``X = M u`` in packed form:

    z[k] = X[k] - i * X[n - k]          (X[n] := 0, so Im z[0] = 0)

so the DCT reads out as ``X[k] = Re z[k]`` and ``X[n-k] = -Im z[k]`` and the inverse packs ``X`` into ``z``,
un-twiddles with ``conj(w)``, takes ``irfft`` and un-permutes. The orthonormal transform is
``C = diag(scale) @ M``. Costs: one rfft (or irfft) plus three elementwise passes, O(n log n), for any n >= 1.

Gradient: C is orthogonal, so the adjoint of ``dct`` is ``idct`` and vice versa (backward of one is the other,
and forward-mode AD is the transform of the tangent). Reference: :func:`dct_matrix` (dense, float64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import tables
from .passes import scale_

__all__ = ["dct", "idct", "dct_matrix", "makhoul_tables", "makhoul_permutation", "MakhoulTables", "check_float_input",
           "largest_prime_factor", "fast_length", "warn_if_slow_length"]


@dataclass(frozen=True)
class MakhoulTables:
    """Constant tables for length ``n`` on one (dtype, device); cached, never rebuilt per call.

    perm/iperm: (n,) Makhoul reorder and its inverse. twiddle/untwiddle: (h,) complex w and conj(w);
    twiddle_pairs: w as contiguous (h, 2) real pairs (for the native kernels).
    unpack: (n,) index into the (h, 2) real view of z giving X; unpack_sign: (n,) +1 / -1.
    pack: (h, 2) index into X giving the real view of z; pack_sign: (h, 2) with 0 where Im z is 0.
    scale / inv_scale / scale_sq: (n,) orthonormal scaling of M, its inverse and its square.
    """

    n: int
    perm: torch.Tensor
    iperm: torch.Tensor
    twiddle: torch.Tensor
    untwiddle: torch.Tensor
    twiddle_pairs: torch.Tensor
    unpack: torch.Tensor
    unpack_sign: torch.Tensor
    pack: torch.Tensor
    pack_sign: torch.Tensor
    pack_mask: torch.Tensor
    scale: torch.Tensor
    inv_scale: torch.Tensor
    scale_sq: torch.Tensor

    @property
    def bins(self) -> int:
        return self.n // 2 + 1


def _makhoul_permutation(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(n, device=device)
    perm = torch.cat([idx[0::2], idx[1::2].flip(0)])
    return perm, torch.empty_like(perm).scatter_(0, perm, idx)


_cached_permutation = tables.cached(_makhoul_permutation)


def makhoul_permutation(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, iperm): Makhoul's reorder of length n (evens, then odds reversed) and its inverse.

    Cached per (n, device) in :mod:`torch_acdc.tables` (plain tensors, bounded memory); under torch.compile
    it is traced (a few O(n) integer ops the compiler folds).
    """
    return _cached_permutation(n, torch.device(device))


@tables.cached
def _build_makhoul_tables(n: int, dtype: torch.dtype, device: torch.device) -> MakhoulTables:
    if n < 1:
        raise ValueError(f"DCT length must be >= 1, got {n}")
    idx = torch.arange(n)
    perm, iperm = _makhoul_permutation(n, "cpu")
    h = n // 2 + 1
    k = torch.arange(h, dtype=torch.float64)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    # X[j] = Re z[j] for j <= n//2, X[j] = -Im z[n-j] for j > n//2 (flat index into the (h, 2) view).
    unpack = torch.where(idx <= n // 2, 2 * idx, 2 * (n - idx) + 1)
    unpack_sign = torch.where(idx <= n // 2, 1.0, -1.0)
    # z[k] = X[k] - i X[n-k]; Im z[0] = 0 (index 0 with sign 0 keeps the gather in range).
    kk = torch.arange(h)
    pack = torch.stack([kk, torch.where(kk == 0, 0, n - kk)], dim=-1)
    pack_sign = torch.stack([torch.ones(h), torch.where(kk == 0, 0.0, -1.0)], dim=-1)
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n)
    dev = torch.device(device)
    return MakhoulTables(
        n=n,
        perm=perm.to(dev),
        iperm=iperm.to(dev),
        twiddle=twiddle.to(device=dev, dtype=cdtype),
        untwiddle=twiddle.conj().resolve_conj().to(device=dev, dtype=cdtype),
        twiddle_pairs=torch.view_as_real(twiddle).to(device=dev, dtype=dtype).contiguous(),
        unpack=unpack.to(dev),
        unpack_sign=unpack_sign.to(device=dev, dtype=dtype),
        pack=pack.reshape(-1).to(dev),
        pack_sign=pack_sign.to(device=dev, dtype=dtype),
        pack_mask=pack_sign.abs().to(device=dev, dtype=dtype),
        scale=scale.to(device=dev, dtype=dtype),
        inv_scale=(1.0 / scale).to(device=dev, dtype=dtype),
        scale_sq=scale.square().to(device=dev, dtype=dtype),
    )


def makhoul_tables(n: int, dtype: torch.dtype, device) -> MakhoulTables:
    """The tables of :class:`MakhoulTables` for (n, dtype, device), ``dtype`` real: built once per key in
    :mod:`torch_acdc.tables` (plain tensors whatever mode is active, bounded memory)."""
    return _build_makhoul_tables(n, dtype, torch.device(device))


def peek_makhoul_tables(n: int, dtype: torch.dtype, device: torch.device) -> MakhoulTables | None:
    """The cached tables for (n, dtype, device) or None (eager calls outside tracing only: see tables.peek)."""
    return _build_makhoul_tables.peek(n, dtype, device)


def tables_for(x: torch.Tensor) -> MakhoulTables:
    """The tables for the last dimension of ``x``."""
    return makhoul_tables(x.shape[-1], x.dtype, x.device)


def largest_prime_factor(n: int) -> int:
    """The largest prime factor of n >= 1 (1 for n = 1). O(sqrt n)."""
    largest, f = 1, 2
    while f * f <= n:
        while n % f == 0:
            largest, n = f, n // f
        f += 1
    return max(largest, n) if n > 1 else largest


def fast_length(n: int) -> int:
    """The smallest m >= n whose prime factors are all <= 7 (lengths MKL's FFT handles at full speed)."""
    m = n
    while largest_prime_factor(m) > 7:
        m += 1
    return m


SLOW_PRIME = 13  # a transform length with a prime factor above this is markedly slow (docs/performance.md)
_warned_lengths: set[int] = set()


def warn_if_slow_length(n: int, who: str) -> None:
    """Warn once per n when an n-point transform has a large prime factor (an FFT of such a length costs
    several times one of a nearby smooth length), naming the nearest fast length."""
    if n in _warned_lengths or largest_prime_factor(n) <= SLOW_PRIME:
        return
    _warned_lengths.add(n)
    import warnings

    warnings.warn(f"{who}: n = {n} has the prime factor {largest_prime_factor(n)}; its FFTs are several times "
                  f"slower than for a nearby smooth size such as {fast_length(n)} (docs/performance.md, "
                  "'Awkward sizes')", RuntimeWarning, stacklevel=3)


def check_float_input(x: torch.Tensor, what: str = "input") -> None:
    """Raise a TypeError naming the dtype unless ``x`` is a real floating tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{what} must be a real floating-point tensor (float16/bfloat16/float32/float64), got {x.dtype}"
        )
    if x.dim() < 1:
        raise ValueError(f"{what} must have at least one dimension, got a 0-d tensor")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs on CPU reject fp16/bf16: low-precision inputs are computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---- packed spectrum <-> real coefficients (the unnormalised DCT-II M and its inverse) ----

def rfft(v: torch.Tensor) -> torch.Tensor:
    """torch.fft.rfft over the last dimension, also for an empty batch (MKL rejects empty FFTs)."""
    if v.numel() == 0:
        return v.new_zeros(*v.shape[:-1], v.shape[-1] // 2 + 1, dtype=v.dtype.to_complex())
    return torch.fft.rfft(v)


def irfft(z: torch.Tensor, n: int) -> torch.Tensor:
    """torch.fft.irfft(z, n) over the last dimension, also for an empty batch."""
    if z.numel() == 0:
        return torch.zeros(*z.shape[:-1], n, dtype=z.real.dtype, device=z.device)
    return torch.fft.irfft(z, n)


def spectrum(v: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """z = w * rfft(v): the packed unnormalised DCT-II of ``u`` where ``v = u[perm]``. (..., n) -> (..., h)."""
    return scale_(rfft(v), t.twiddle)


def inverse_spectrum(z: torch.Tensor, t: MakhoulTables, overwrite: bool = False) -> torch.Tensor:
    """irfft(conj(w) * z): inverse of :func:`spectrum` (result in Makhoul order). (..., h) -> (..., n).

    ``overwrite=True`` lets it reuse ``z`` (a temporary of the caller) as scratch space.
    """
    return irfft(scale_(z, t.untwiddle) if overwrite else z * t.untwiddle, t.n)


def unpack(z: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """Packed complex (..., h) -> real coefficients X (..., n)."""
    flat = torch.view_as_real(z).reshape(*z.shape[:-1], 2 * t.bins)
    return flat.index_select(-1, t.unpack) * t.unpack_sign


def pack(x: torch.Tensor, t: MakhoulTables) -> torch.Tensor:
    """Real coefficients X (..., n) -> packed complex z (..., h), z[k] = X[k] - i X[n-k]."""
    r = x.index_select(-1, t.pack).reshape(*x.shape[:-1], t.bins, 2) * t.pack_sign
    return torch.view_as_complex(r)


def _dct_forward(x: torch.Tensor) -> torch.Tensor:
    t = tables_for(x)
    return scale_(unpack(spectrum(x.index_select(-1, t.perm), t), t), t.scale)


def _idct_forward(y: torch.Tensor) -> torch.Tensor:
    t = tables_for(y)
    return inverse_spectrum(pack(y * t.inv_scale, t), t, overwrite=True).index_select(-1, t.iperm)


def _orthogonal_transform(name: str, forward_fn):
    """An autograd Function for an orthogonal map T: backward applies T^T = T^-1 (its ``adjoint`` Function,
    set below), forward mode applies T to the tangent, vmap is generated."""

    class Transform(torch.autograd.Function):
        generate_vmap_rule = True
        adjoint: type

        @staticmethod
        def forward(x):
            return forward_fn(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return Transform.adjoint.apply(g)

        @staticmethod
        def jvp(ctx, dx):
            return Transform.apply(dx)

    Transform.__name__ = Transform.__qualname__ = name
    return Transform


_DCT = _orthogonal_transform("_DCT", _dct_forward)  # orthonormal DCT-II
_IDCT = _orthogonal_transform("_IDCT", _idct_forward)  # orthonormal DCT-III, its inverse and transpose
_DCT.adjoint, _IDCT.adjoint = _IDCT, _DCT


def _apply_lowp_safe(fn, x: torch.Tensor, what: str) -> torch.Tensor:
    check_float_input(x, what)
    ct = compute_dtype(x.dtype)
    if x.shape[-1] == 0:
        raise ValueError(f"{what} must have a last dimension >= 1, got shape {tuple(x.shape)}")
    return fn.apply(x.to(ct)).to(x.dtype)


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dimension; equals ``scipy.fft.dct(x, type=2, norm="ortho", axis=-1)``.

    Shape (..., n) -> (..., n) for any n >= 1. O(n log n): one rfft. fp16/bf16 are computed in float32
    and returned in the input dtype. Differentiable (reverse, forward, double backward, vmap).
    """
    return _apply_lowp_safe(_DCT, x, "dct input")


def idct(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-III (the inverse and the transpose of :func:`dct`) along the last dimension.

    Equals ``scipy.fft.idct(y, type=2, norm="ortho", axis=-1)``. Shape (..., n) -> (..., n), one irfft.
    """
    return _apply_lowp_safe(_IDCT, y, "idct input")


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Reference: the dense orthonormal DCT-II matrix C (n, n), so that ``dct(x) == x @ C.T``. O(n^2)."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    m = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(math.pi * k * (2 * m + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype=dtype, device=device)
