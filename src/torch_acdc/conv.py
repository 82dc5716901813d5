"""ACDC convolutions: a 1x1 convolution whose channel mixing is a StackedACDC, and a separable k x k variant.

:class:`ACDCConv2d` views (N, C, H, W) as channels-last (N, H, W, C) (a permute, no copy), applies a
:class:`~torch_acdc.layers.StackedACDC` along the channels and permutes back, so the output is a
channels-last-strided (N, C_out, H_out, W_out) tensor. Parameters O(depth * max(C_in, C_out)) instead of
C_in * C_out; cost O(depth * C log C) per pixel instead of O(C_in * C_out).

:class:`ACDCSeparableConv2d` is a depthwise k x k ``nn.Conv2d`` (groups = C_in, no bias) followed by an
:class:`ACDCConv2d`: parameters C_in * k^2 + O(depth * C), against C_in * C_out * k^2 for a dense k x k conv.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .cost import LayerCost, layer_cost
from .layers import StackedACDC

__all__ = ["ACDCConv2d", "ACDCSeparableConv2d"]


def _check_conv_input(x: torch.Tensor, in_channels: int, who: str) -> None:
    """nn.Conv2d's rank and channel checks (RuntimeError, naming expected and given)."""
    if x.dim() not in (3, 4):
        raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to {who}, "
                           f"but got input of size: {list(x.shape)}")
    if x.shape[-3] != in_channels:
        raise RuntimeError(f"{who} expected input{list(x.shape)} to have {in_channels} channels, "
                           f"but got {x.shape[-3]} channels instead")


class ACDCConv2d(nn.Module):
    """1x1 convolution (N, C_in, H, W) -> (N, C_out, H_out, W_out) with an ACDC stack as the channel mixer.

    ``depth``, ``permutation``, ``activation``, ``init`` and ``bias`` are those of the
    :class:`~torch_acdc.layers.StackedACDC` in ``self.acdc``; ``stride`` subsamples the input like a 1x1
    ``nn.Conv2d`` with that stride (H_out = ceil(H / stride)). Unbatched (C, H, W) input is accepted.
    For a linear stack, ``to_dense()`` gives the equivalent ``nn.Conv2d`` weight (C_out, C_in, 1, 1).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2, stride=1, bias: bool = True,
                 permutation="random", activation=None, init: str = "paper", device=None, dtype=None):
        super().__init__()
        self._setup(StackedACDC(in_channels, out_channels, depth, permutation=permutation, activation=activation,
                                bias=bias, init=init, device=device, dtype=dtype), stride)

    @classmethod
    def from_stack(cls, stack: StackedACDC, stride=1) -> "ACDCConv2d":
        """Wrap an existing stack (e.g. one fitted to a dense 1x1 kernel) as a 1x1 convolution; no copy."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module._setup(stack, stride)
        return module

    def _setup(self, stack: StackedACDC, stride) -> None:
        self.stride = _pair(stride)
        if any(not isinstance(s, int) or s < 1 for s in self.stride):
            raise ValueError(f"stride must be a positive integer or a pair of them, got {stride!r}")
        self.acdc = stack
        self.in_channels, self.out_channels = stack.in_features, stack.out_features

    def reset_parameters(self) -> None:
        self.acdc.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_conv_input(x, self.in_channels, "ACDCConv2d")
        if self.stride != (1, 1):
            x = x[..., :: self.stride[0], :: self.stride[1]]
        return self.acdc(x.movedim(-3, -1)).movedim(-1, -3)

    def cost(self, input_shape) -> LayerCost:
        """Cost of one call on ``input_shape`` (..., C_in, H, W): the stack's on every output pixel
        (:mod:`torch_acdc.cost` protocol)."""
        *lead, c, h, w = input_shape
        pixels = math.prod(lead) * -(-h // self.stride[0]) * -(-w // self.stride[1])
        return layer_cost(self.acdc, (pixels, c))

    def to_dense(self) -> torch.Tensor:
        """The equivalent ``nn.Conv2d`` weight (C_out, C_in, 1, 1); bias = ``self.acdc(zeros(C_in))``."""
        return self.acdc.to_dense()[:, :, None, None]

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}"  # depth, permutation, bias: in the child's repr
        return s + (f", stride={self.stride}" if self.stride != (1, 1) else "")


class ACDCSeparableConv2d(nn.Module):
    """Depthwise k x k convolution then an ACDC 1x1: (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    ``kernel_size``, ``stride``, ``padding``, ``dilation`` and ``padding_mode`` are those of the depthwise
    ``nn.Conv2d`` (``self.depthwise``, groups = C_in, no bias: the pointwise bias follows it), so H_out and
    W_out are nn.Conv2d's. The rest configures ``self.pointwise`` (:class:`ACDCConv2d`). For a linear stack,
    ``to_dense()`` gives the equivalent dense ``nn.Conv2d`` weight (C_out, C_in, k_h, k_w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 depth: int = 2, bias: bool = True, padding_mode: str = "zeros", permutation="random",
                 activation=None, init: str = "paper", device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=in_channels, bias=False, padding_mode=padding_mode,
                                   device=device, dtype=dtype)
        self.pointwise = ACDCConv2d(in_channels, out_channels, depth, bias=bias, permutation=permutation,
                                    activation=activation, init=init, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.depthwise.reset_parameters()
        self.pointwise.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_conv_input(x, self.in_channels, "ACDCSeparableConv2d")
        return self.pointwise(self.depthwise(x))

    def to_dense(self) -> torch.Tensor:
        """W[o, i] = P[o, i] * K_i: the pointwise matrix times each channel's depthwise kernel."""
        return self.pointwise.to_dense() * self.depthwise.weight.transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"
