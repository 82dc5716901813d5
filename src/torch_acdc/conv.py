"""ACDC convolutions: an ``nn.Conv2d``-compatible layer whose channel mixing is a StackedACDC.

:class:`ACDCConv2d` takes ``nn.Conv2d``'s arguments. With ``kernel_size=1`` it views (N, C, H, W) as
channels-last (N, H, W, C) (a permute, no copy), applies a :class:`~torch_acdc.layers.StackedACDC` along the
channels and permutes back. With a k x k kernel it is the separable form: a depthwise k x k ``nn.Conv2d``
(groups = C_in, no bias) and then that ACDC channel mixer. Parameters C_in * k_h * k_w (k > 1 only)
+ depth * (2 + bias) * max(C_in, C_out), against C_in * C_out * k_h * k_w (+ C_out) for ``nn.Conv2d``.

:class:`ACDCSeparableConv2d` is a deprecated alias of the k x k form (old positional order, FutureWarning).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .cost import LayerCost, conv2d_output_size, layer_cost
from .layers import StackedACDC

__all__ = ["ACDCConv2d", "ACDCSeparableConv2d"]

_MIGRATION = ("(the old ACDCConv2d(in, out, depth, stride, bias, permutation, activation, init) is gone: "
              "the positional arguments are now nn.Conv2d's (kernel_size, stride, padding, dilation, groups, "
              "bias, padding_mode); pass depth=, permutation=, activation=, init= by keyword)")


def _check_conv_input(x: torch.Tensor, in_channels: int, who: str) -> None:
    """nn.Conv2d's rank and channel checks (RuntimeError, naming expected and given)."""
    if x.dim() not in (3, 4):
        raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to {who}, "
                           f"but got input of size: {list(x.shape)}")
    if x.shape[-3] != in_channels:
        raise RuntimeError(f"{who} expected input{list(x.shape)} to have {in_channels} channels, "
                           f"but got {x.shape[-3]} channels instead")


def _check_migration(padding, dilation, groups, bias) -> None:
    """Reject values that only an old positional call passes there (bias, permutation, activation, init)."""
    for name, value, bad in (("padding", padding, isinstance(padding, bool)),
                             ("dilation", dilation, dilation is None or isinstance(dilation, (bool, str))),
                             ("groups", groups, isinstance(groups, bool) or not isinstance(groups, int)),
                             ("bias", bias, isinstance(bias, str))):
        if bad:
            raise TypeError(f"ACDCConv2d got {name}={value!r} " + _MIGRATION)


class ACDCConv2d(nn.Module):
    """``nn.Conv2d``-compatible convolution (N, C_in, H, W) -> (N, C_out, H_out, W_out) with an ACDC channel mixer.

    Positional arguments are ``nn.Conv2d``'s; H_out, W_out, the accepted ``padding`` (int, pair, 'same',
    'valid') and ``padding_mode`` ('zeros', 'reflect', 'replicate', 'circular') and the construction errors
    are nn.Conv2d's (it validates them). Unbatched (C_in, H, W) input is accepted. Only ``groups=1``: the
    channel mixer of a grouped convolution is already block-diagonal (ValueError otherwise).

    * ``kernel_size`` 1: ``self.acdc`` (``StackedACDC(C_in, C_out, depth, ...)``) on a channels-last view of the
      (padded, strided) input. Parameters depth * (2 + bias) * N, N = max(C_in, C_out); multiply-adds per
      output pixel depth * (4 N log2 N + ~7 N) (:mod:`torch_acdc.cost`), against C_in * C_out.
    * k_h x k_w: ``self.depthwise`` (``nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation,
      groups=C_in, bias=False, padding_mode)``), then ``self.acdc`` as above (stride 1, no padding).
      Adds C_in * k_h * k_w parameters and multiply-adds per output pixel.

    ``bias`` and the keyword-only ``depth``, ``permutation``, ``activation``, ``init`` configure the stack; its
    last layer's bias is the convolution's bias. For a linear stack ``to_dense()`` is
    the equivalent nn.Conv2d weight (C_out, C_in, k_h, k_w) and ``self.acdc(zeros(1, C_in))[0]`` the bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, depth: int = 2,
                 permutation="random", activation=None, init: str = "paper", device=None, dtype=None):
        super().__init__()
        self._setup_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                             padding_mode, device, dtype)
        self.acdc = StackedACDC(in_channels, out_channels, depth, permutation=permutation, activation=activation,
                                bias=bias, init=init, device=device, dtype=dtype)

    @classmethod
    def from_stack(cls, stack: StackedACDC, kernel_size=1, stride=1, padding=0, dilation=1,
                   padding_mode: str = "zeros") -> "ACDCConv2d":
        """Wrap an existing stack (e.g. one fitted to a dense 1x1 kernel) as the channel mixer; no copy.
        For kernel_size > 1 the depthwise convolution is new (nn.Conv2d's init, the stack's device/dtype)."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module._setup_geometry(stack.in_features, stack.out_features, kernel_size, stride, padding, dilation, 1,
                               stack.bias is not None, padding_mode, stack.a.device, stack.a.dtype)
        module.acdc = stack
        return module

    def _setup_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode, device, dtype) -> None:
        _check_migration(padding, dilation, groups, bias)
        for name, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
            if any(not isinstance(v, int) or v < 1 for v in _pair(value)):
                raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
        # nn.Conv2d's own validation and normalisation (a meta-device module: no memory, nothing computed)
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode, device="meta")
        if groups != 1:
            raise ValueError(f"ACDCConv2d supports groups=1 only, got groups={groups}: the channel mixing of a "
                             "grouped convolution is already block-diagonal (use nn.Conv2d for it)")
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(ref, name))
        self.depthwise = None
        if self.kernel_size != (1, 1):
            self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                       groups=in_channels, bias=False, padding_mode=padding_mode, device=device,
                                       dtype=dtype)

    def reset_parameters(self) -> None:
        if self.depthwise is not None:
            self.depthwise.reset_parameters()
        self.acdc.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_conv_input(x, self.in_channels, type(self).__name__)
        if self.depthwise is not None:
            x = self.depthwise(x)
        else:
            if any(self._reversed_padding_repeated_twice):
                mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
            if self.stride != (1, 1):
                x = x[..., :: self.stride[0], :: self.stride[1]]
        return self.acdc(x.movedim(-3, -1)).movedim(-1, -3)

    def cost(self, input_shape) -> LayerCost:
        """Cost of one call on ``input_shape`` (..., C_in, H, W): the depthwise convolution's (k > 1) plus the
        stack's on every output pixel (:mod:`torch_acdc.cost` protocol)."""
        *lead, c, h, w = input_shape
        out_h, out_w = conv2d_output_size(self, h, w)
        total = layer_cost(self.acdc, (math.prod(lead) * out_h * out_w, c))
        return total if self.depthwise is None else layer_cost(self.depthwise, input_shape) + total

    def to_dense(self) -> torch.Tensor:
        """The equivalent ``nn.Conv2d`` weight (C_out, C_in, k_h, k_w): W[o, i] = P[o, i] * K_i, P the stack's
        matrix and K_i channel i's depthwise kernel (1 for k = 1). Needs a linear stack."""
        pointwise = self.acdc.to_dense()[:, :, None, None]
        return pointwise if self.depthwise is None else pointwise * self.depthwise.weight.transpose(0, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix + "pointwise.acdc.")]:  # ACDCSeparableConv2d
            state_dict[prefix + key[len(prefix + "pointwise."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:  # nn.Conv2d's; depth, permutation and init are in the child's repr
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.acdc.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class ACDCSeparableConv2d(ACDCConv2d):
    """Deprecated: ``ACDCConv2d(in, out, kernel_size, ..., depth=depth)`` is the same layer.

    Kept for its old positional order (``..., dilation, depth, bias, padding_mode, ...``); warns
    (FutureWarning). The mixer is ``.acdc`` (was ``.pointwise.acdc``); old state dicts (``pointwise.acdc.*``
    keys) load into :class:`ACDCConv2d` too. With kernel_size 1 there is no depthwise part any more.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 depth: int = 2, bias: bool = True, padding_mode: str = "zeros", permutation="random",
                 activation=None, init: str = "paper", device=None, dtype=None):
        warnings.warn("ACDCSeparableConv2d is deprecated: use ACDCConv2d(in_channels, out_channels, kernel_size, "
                      "stride, padding, dilation, bias=..., padding_mode=..., depth=...), the same layer",
                      FutureWarning, stacklevel=2)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias, padding_mode,
                         depth=depth, permutation=permutation, activation=activation, init=init, device=device,
                         dtype=dtype)
