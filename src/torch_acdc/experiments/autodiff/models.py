"""The three stacks whose derivatives are compared, computing the same kind of map.

* :class:`~torch_acdc.StackedACDC` - our layers (analytic O(n log n) backward).
* :class:`PlainACDCStack` - the same stack (the very same parameters and permutations) written with plain
  torch ops over ``torch.fft`` (Makhoul's DCT, one rfft / irfft per transform), differentiated by autograd.
* :func:`dense_stack` - ``depth`` nn.Linear(n, n) layers: O(depth n^2) per row.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...layers import StackedACDC

__all__ = ["PlainACDCStack", "dense_stack"]


class PlainACDCStack(nn.Module):
    """``stack``'s map y = ... P_1 (C^T D_1 C A_1 x + b_1) ... with plain autograd ops; shares its parameters.

    Square stacks (in = out = n) with or without an activation. Per layer: 1 rfft + 1 irfft + ~12 elementwise
    ops, each recorded by autograd (so backward is autograd's, not the analytic one). O(depth n log n) per row.
    """

    def __init__(self, stack: StackedACDC):
        super().__init__()
        if stack.in_features != stack.out_features:
            raise ValueError(f"PlainACDCStack needs a square stack, got {stack.in_features} -> {stack.out_features}")
        self.stack = stack
        n = stack.features
        idx = torch.arange(n)
        perm = torch.cat([idx[0::2], idx[1::2].flip(0)])
        k = torch.arange(n // 2 + 1, dtype=torch.float64)
        scale = torch.full((n,), math.sqrt(2.0 / n), dtype=torch.float64)
        scale[0] = math.sqrt(1.0 / n)
        dtype = stack.a.dtype
        self.register_buffer("perm", perm)
        self.register_buffer("iperm", torch.argsort(perm))
        self.register_buffer("twiddle", torch.polar(torch.ones_like(k), -math.pi * k / (2 * n)).to(dtype.to_complex()))
        self.register_buffer("scale", scale.to(dtype))

    def dct(self, x: torch.Tensor) -> torch.Tensor:
        """Orthonormal DCT-II of the last dimension: X = scale * unpack(w * rfft(x[perm]))."""
        n = x.shape[-1]
        z = torch.fft.rfft(x[..., self.perm]) * self.twiddle
        rest = -z.imag[..., 1 : n - n // 2].flip(-1)  # X[j] = -Im z[n - j] for j > n // 2
        return torch.cat([z.real, rest], -1) * self.scale

    def idct(self, y: torch.Tensor) -> torch.Tensor:
        """Orthonormal DCT-III (the inverse of :meth:`dct`): irfft(conj(w) * pack(y / scale))[iperm]."""
        n = y.shape[-1]
        x = y / self.scale
        imag = torch.cat([torch.zeros_like(x[..., :1]), -x.flip(-1)[..., : n // 2]], -1)  # Im z[k] = -X[n-k]
        z = torch.complex(x[..., : n // 2 + 1], imag) * self.twiddle.conj()
        return torch.fft.irfft(z, n)[..., self.iperm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stack
        h = x
        for i in range(s.depth):
            h = self.idct(s.d[i] * self.dct(s.a[i] * h))
            if s.bias is not None:
                h = h + s.bias[i]
            if i < s.depth - 1:
                if s.activation is not None:
                    h = s.activation(h)
                if s.permutation is not None:
                    h = h[..., s.perms[i]]
        return h


def dense_stack(n: int, depth: int, dtype=None) -> nn.Sequential:
    """``depth`` nn.Linear(n, n) layers (with bias): n^2 + n parameters and O(n^2) per row each."""
    return nn.Sequential(*[nn.Linear(n, n, dtype=dtype) for _ in range(depth)])
