"""torch.compile support: the ACDC operator and its gradients as ``torch.library`` custom ops.

The compiler generates no code for complex ops and Dynamo does not trace autograd Functions that define
``jvp``, so on the ``compiled`` route (:mod:`torch_acdc.dispatch`) the layers call opaque custom ops:

* ``torch_acdc::acdc(x, a, d, b?, p_idx?, p_inv?, in_idx?, in_inv?, out_idx?, out_inv?) -> y``   2 FFTs
* ``torch_acdc::acdc_grads(grad_y, x, a, d, p_idx?, p_inv?, in_idx?, in_inv?, out_inv?, need_b) ->
  (grad_x, grad_a, grad_d, grad_b)`` 3 FFTs (grad_b is empty when ``need_b`` is False)

with fake (meta) implementations for shape propagation, and the first registered as differentiable through
the second. The math is the eager path's (:mod:`torch_acdc.functional`), not a copy; inside, the kernel is
:func:`torch_acdc.dispatch.kernel`'s choice at run time. Limitation: the compiled graph is differentiable once
(double backward through a compiled ACDC is not supported; eager supports it).
"""
from __future__ import annotations

from typing import Optional

import torch

from .functional import acdc_forward, acdc_grads

__all__ = ["acdc_op", "acdc_grads_op"]

Idx = Optional[torch.Tensor]


@torch.library.custom_op("torch_acdc::acdc", mutates_args=())
def acdc_op(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, b: Optional[torch.Tensor], p_idx: Idx, p_inv: Idx,
            in_idx: Idx, in_inv: Idx, out_idx: Idx, out_inv: Idx) -> torch.Tensor:
    with torch.no_grad():
        return acdc_forward(x.contiguous(), a, d, b, p_idx, in_idx, out_idx)[0]


@acdc_op.register_fake
def _(x, a, d, b, p_idx, p_inv, in_idx, in_inv, out_idx, out_inv):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("torch_acdc::acdc_grads", mutates_args=())
def acdc_grads_op(grad_y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, p_idx: Idx,
                  p_inv: Idx, in_idx: Idx, in_inv: Idx, out_inv: Idx,
                  need_b: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        gx, ga, gd, gb = acdc_grads(grad_y.contiguous(), x.contiguous(), a, d, None, p_idx, p_inv, in_idx, in_inv,
                                    out_inv, (True, True, True, need_b))
    return gx, ga, gd, gb if gb is not None else d.new_empty(0)


@acdc_grads_op.register_fake
def _(grad_y, x, a, d, p_idx, p_inv, in_idx, in_inv, out_inv, need_b):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(a),
            torch.empty_like(d), torch.empty_like(d) if need_b else d.new_empty(0))


def _save_inputs(ctx, inputs, output):
    x, a, d, b, *idx = inputs
    ctx.has_bias = b is not None
    ctx.save_for_backward(x, a, d, *idx)


def _backward(ctx, grad_y):
    x, a, d, p_idx, p_inv, in_idx, in_inv, _out_idx, out_inv = ctx.saved_tensors
    gx, ga, gd, gb = acdc_grads_op(grad_y, x, a, d, p_idx, p_inv, in_idx, in_inv, out_inv, ctx.has_bias)
    return gx, ga, gd, (gb if ctx.has_bias else None), None, None, None, None, None, None


acdc_op.register_autograd(_backward, setup_context=_save_inputs)
