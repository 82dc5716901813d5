"""A drop-in for the torch-dct package (``import torch_acdc.dct_compat as torch_dct``) on current PyTorch.

torch-dct (zh217/torch-dct) is built on ``torch.rfft``/``torch.irfft``, which PyTorch removed in 1.8. This
module has its API and conventions, built on :func:`torch_acdc.transform.dct` / :func:`~torch_acdc.transform.idct`
(exact for every length, one real FFT, analytic reverse/forward/double-backward gradients, vmap, fp16/bf16):

    dct(x, norm=None)        DCT-II over the last dim; norm=None: scipy.fftpack.dct(x, type=2) (unnormalised,
                             y[k] = 2 sum_m x[m] cos(pi k (2m+1) / 2N)); norm="ortho": the orthonormal DCT-II
    idct(X, norm=None)       the inverse of dct with the same norm: idct(dct(x, norm), norm) == x, i.e. the
                             DCT-III scipy.fftpack.idct(X, type=2) / (2N) for None, orthonormal for "ortho"
    dct_2d / idct_2d         the same over the last 2 dims, dct_3d / idct_3d over the last 3 dims
    dct1(x), idct1(X)        DCT-I (scipy.fftpack.dct(x, type=1)) and its inverse dct1(X) / (2(N-1)); N >= 2
    LinearDCT(n, type, norm) the transform as a frozen nn.Linear (type 'dct', 'idct', 'dct1' or 'idct1')
    apply_linear_2d / _3d    apply such a layer over the last 2 / 3 dims

Costs: dct/idct one rfft/irfft plus O(N) passes per row (the *_2d/_3d variants one per dimension);
dct1/idct1 one rfft of length 2(N-1). Differences from torch-dct, all deliberate: an unknown ``norm`` (or
``type``) raises ValueError instead of silently meaning None; inputs must be real floating tensors;
``LinearDCT(bias=True)`` starts with a zero bias instead of uninitialised memory.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from . import tables, transform
from .transform import check_float_input, compute_dtype, makhoul_tables

__all__ = ["dct", "idct", "dct_2d", "idct_2d", "dct_3d", "idct_3d", "dct1", "idct1", "LinearDCT",
           "apply_linear_2d", "apply_linear_3d"]

NORMS = (None, "ortho")
LINEAR_TYPES = ("dct", "idct", "dct1", "idct1")


def _check_norm(norm) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: expected None or 'ortho'")


@tables.cached
def _gains(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, 1/g), (n,) each: scipy's unnormalised DCT-II = g * the orthonormal one; g[0] = 2 sqrt(n), else sqrt(2n)."""
    t = makhoul_tables(n, dtype, device)
    return 2.0 * t.inv_scale, 0.5 * t.scale


def _unnormalised(x: torch.Tensor, inverse: bool, what: str) -> torch.Tensor:
    """g * dct(x), or idct(x / g), on the compute dtype (fp16/bf16 in float32), returned in x's dtype."""
    check_float_input(x, what)
    if x.shape[-1] == 0:
        raise ValueError(f"{what} must have a last dimension >= 1, got shape {tuple(x.shape)}")
    ct = compute_dtype(x.dtype)
    gain, inv_gain = _gains(x.shape[-1], ct, x.device)
    y = transform.idct(x.to(ct) * inv_gain) if inverse else transform.dct(x.to(ct)) * gain
    return y.to(x.dtype)


def dct(x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """DCT-II over the last dimension, as torch_dct.dct: scipy.fftpack.dct(x, type=2, norm=norm). (..., N)."""
    _check_norm(norm)
    if norm == "ortho":
        return transform.dct(x)
    return _unnormalised(x, inverse=False, what="dct input")


def idct(X: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """Inverse of :func:`dct` with the same ``norm`` (a scaled DCT-III) over the last dimension. (..., N)."""
    _check_norm(norm)
    if norm == "ortho":
        return transform.idct(X)
    return _unnormalised(X, inverse=True, what="idct input")


def _over_last_dims(fn, x: torch.Tensor, ndim: int, what: str) -> torch.Tensor:
    """Apply the last-dimension transform ``fn`` along each of the last ``ndim`` dimensions."""
    if not isinstance(x, torch.Tensor) or x.dim() < ndim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} needs an input with at least {ndim} dimensions, got {shape}")
    for dim in range(1, ndim + 1):
        x = fn(x.transpose(-dim, -1)).transpose(-dim, -1)
    return x


def dct_2d(x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """2-D DCT-II over the last 2 dimensions (scipy.fftpack.dctn(x, type=2, axes=(-2, -1), norm=norm))."""
    _check_norm(norm)
    return _over_last_dims(functools.partial(dct, norm=norm), x, 2, "dct_2d")


def idct_2d(X: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """Inverse of :func:`dct_2d` with the same ``norm``."""
    _check_norm(norm)
    return _over_last_dims(functools.partial(idct, norm=norm), X, 2, "idct_2d")


def dct_3d(x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """3-D DCT-II over the last 3 dimensions."""
    _check_norm(norm)
    return _over_last_dims(functools.partial(dct, norm=norm), x, 3, "dct_3d")


def idct_3d(X: torch.Tensor, norm: str | None = None) -> torch.Tensor:
    """Inverse of :func:`dct_3d` with the same ``norm``."""
    _check_norm(norm)
    return _over_last_dims(functools.partial(idct, norm=norm), X, 3, "idct_3d")


def dct1(x: torch.Tensor) -> torch.Tensor:
    """DCT-I over the last dimension (N >= 2), = scipy.fftpack.dct(x, type=1):
    y[k] = x[0] + (-1)^k x[N-1] + 2 sum_{m=1}^{N-2} x[m] cos(pi k m / (N-1)).

    The real part of the rfft of the even extension (x[0], ..., x[N-1], x[N-2], ..., x[1]): one rfft of length
    2(N-1). Differentiable through torch.fft (reverse, forward, double backward, vmap).
    """
    check_float_input(x, "dct1 input")
    n = x.shape[-1]
    if n < 2:
        raise ValueError(f"dct1 needs a last dimension >= 2 (DCT-I is undefined for N < 2), got shape {tuple(x.shape)}")
    xc = x.to(compute_dtype(x.dtype))
    extended = torch.cat([xc, xc.flip(-1)[..., 1:-1]], dim=-1)
    if extended.numel() == 0:  # MKL rejects empty FFTs
        return torch.zeros_like(x)
    return torch.fft.rfft(extended).real.to(x.dtype)


def idct1(X: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct1`: dct1(X) / (2(N-1)) (DCT-I is its own inverse up to that factor)."""
    check_float_input(X, "idct1 input")
    return dct1(X) / (2 * (X.shape[-1] - 1))


_TRANSFORMS = {"dct": dct, "idct": idct, "dct1": lambda x, norm: dct1(x), "idct1": lambda x, norm: idct1(x)}


class LinearDCT(nn.Linear):
    """A DCT as a frozen nn.Linear (torch_dct.LinearDCT): ``layer(x)`` = the transform of ``x``'s last dim.

    ``type``: 'dct', 'idct' (with ``norm`` None or 'ortho'), 'dct1' or 'idct1'. Stores the dense (N, N)
    matrix (O(N^2) memory and compute per row; a single matmul, which can beat the FFT for small N on GPUs).
    The weight has requires_grad=False; an optional bias starts at zero and is trainable.
    """

    def __init__(self, in_features: int, type: str, norm: str | None = None, bias: bool = False,
                 device=None, dtype=None):
        if type not in LINEAR_TYPES:
            raise ValueError(f"unknown type {type!r}: expected one of {LINEAR_TYPES}")
        _check_norm(norm)
        self.type, self.norm, self.N = type, norm, in_features
        super().__init__(in_features, in_features, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        eye = torch.eye(self.N, dtype=torch.float64, device=self.weight.device)
        with torch.no_grad():
            self.weight.copy_(_TRANSFORMS[self.type](eye, self.norm).T)
            if self.bias is not None:
                self.bias.zero_()
        self.weight.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, type={self.type!r}, norm={self.norm!r}"


def apply_linear_2d(x: torch.Tensor, linear_layer: nn.Module) -> torch.Tensor:
    """Apply a last-dimension layer (e.g. :class:`LinearDCT`) along each of the last 2 dimensions."""
    return _over_last_dims(linear_layer, x, 2, "apply_linear_2d")


def apply_linear_3d(x: torch.Tensor, linear_layer: nn.Module) -> torch.Tensor:
    """Apply a last-dimension layer (e.g. :class:`LinearDCT`) along each of the last 3 dimensions."""
    return _over_last_dims(linear_layer, x, 3, "apply_linear_3d")
