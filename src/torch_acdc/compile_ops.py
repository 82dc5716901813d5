"""torch.compile support: the ACDC middle and its gradients as ``torch.library`` custom ops.

The compiler generates no code for complex ops and Dynamo does not trace autograd Functions that define
``jvp``, so under ``torch.compile`` the layers call opaque custom ops instead of the eager autograd Function
(see :func:`torch_acdc.functional.acdc_makhoul`):

* ``torch_acdc::acdc_makhoul(v, a_p, d) -> y``: (..., n), (n,), (n,) -> (..., n), 2 FFTs
* ``torch_acdc::acdc_makhoul_grads(grad_y, v, a_p, d) -> (grad_v, grad_a_p, grad_d)``: 3 FFTs

with fake (meta) implementations for shape propagation, and the first registered as differentiable through
the second. The math is the eager path's (:mod:`torch_acdc.functional`), not a copy. Limitation: the compiled
graph is differentiable once (double backward of a compiled ACDC is not supported; eager supports it).
"""
from __future__ import annotations

import torch

from .functional import acdc_makhoul_grads, acdc_makhoul_math

__all__ = ["acdc_makhoul_op", "acdc_makhoul_grads_op"]


@torch.library.custom_op("torch_acdc::acdc_makhoul", mutates_args=())
def acdc_makhoul_op(v: torch.Tensor, a_p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return acdc_makhoul_math(v, a_p, d)


@acdc_makhoul_op.register_fake
def _(v, a_p, d):
    return torch.empty_like(v)


@torch.library.custom_op("torch_acdc::acdc_makhoul_grads", mutates_args=())
def acdc_makhoul_grads_op(grad_y: torch.Tensor, v: torch.Tensor, a_p: torch.Tensor,
                          d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return acdc_makhoul_grads(grad_y.contiguous(), v, a_p, d)


@acdc_makhoul_grads_op.register_fake
def _(grad_y, v, a_p, d):
    return torch.empty_like(v), torch.empty_like(a_p), torch.empty_like(d)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_y):
    v, a_p, d = ctx.saved_tensors
    return acdc_makhoul_grads_op(grad_y, v, a_p, d)


acdc_makhoul_op.register_autograd(_backward, setup_context=_save_inputs)
