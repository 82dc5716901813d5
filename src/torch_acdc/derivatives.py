"""Derivatives beyond the gradient through models with ACDC layers: closed-form Jacobians of linear stacks,
Hessian-vector and Gauss-Newton-vector products.

* :func:`linear_jacobian` - the (out, in) Jacobian of an affine map in closed form: one batched pass on the
  identity (``StackedACDC.to_dense``), O(depth * n^2 log n) for a stack, instead of n reverse passes.
* :func:`least_squares_hessian` - the Hessian 2 J^T J of x -> ||f(x) - y||^2 for affine f.
* :func:`hvp` - H v for a scalar function, by double backward (reverse-over-reverse) or forward-over-reverse;
  about 2-4 gradient costs, no Hessian is formed.
* :func:`ggn_vp` - the Gauss-Newton product J^T H_L J v (one forward-mode pass, one loss HVP, one reverse pass).
* :func:`param_hvp`, :func:`param_ggn_vp` - the same with respect to an nn.Module's parameters.

Every function works in any floating dtype and on any device; tested against ``torch.func`` in float64.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

__all__ = ["linear_jacobian", "least_squares_hessian", "hvp", "ggn_vp", "param_hvp", "param_ggn_vp"]

Tensors = tuple[torch.Tensor, ...]


def _as_tuple(x, what: str) -> tuple[Tensors, bool]:
    if isinstance(x, torch.Tensor):
        return (x,), True
    if isinstance(x, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in x):
        return tuple(x), False
    raise TypeError(f"{what} must be a tensor or a tuple of tensors, got {type(x).__name__}")


def _check_tangents(primals: Tensors, tangents: Tensors) -> None:
    if len(primals) != len(tangents):
        raise ValueError(f"expected {len(primals)} tangent tensor(s), one per primal, got {len(tangents)}")
    for i, (p, v) in enumerate(zip(primals, tangents)):
        if p.shape != v.shape:
            raise ValueError(f"tangent {i} must have the primal's shape {tuple(p.shape)}, got {tuple(v.shape)}")


def linear_jacobian(model: Callable[[torch.Tensor], torch.Tensor], in_features: int | None = None, *,
                    dtype: torch.dtype | None = None, device=None, check: bool = True) -> torch.Tensor:
    """The Jacobian W (out, in) of an affine map f(x) = x @ W.T + f(0) acting on the last dimension.

    A linear :class:`~torch_acdc.StackedACDC` (no activation) uses ``to_dense()``: one batched forward pass on
    the identity, O(depth * n^2 log n). Any other callable: ``f(I) - f(0)`` (``in_features`` defaults to
    ``model.in_features``). ``check``: verify f(x) = f(0) + x W^T at one random x (one extra row) and raise
    ValueError for a map that is not affine (e.g. a stack with an activation).
    """
    in_features = in_features if in_features is not None else getattr(model, "in_features", None)
    if not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"linear_jacobian needs in_features (a positive int), got {in_features!r}")
    if dtype is None or device is None:
        ref = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        device = device or (ref.device if ref is not None else None)
    rows = torch.cat([torch.eye(in_features, dtype=dtype, device=device),
                      torch.zeros(1, in_features, dtype=dtype, device=device)])
    if getattr(model, "activation", "none") is None and hasattr(model, "to_dense"):
        w = model.to_dense()
    else:
        out = model(rows)
        w = (out[:-1] - out[-1]).T
    if check:
        x = torch.randn(1, in_features, dtype=dtype, device=device)
        affine = model(torch.cat([rows[-1:], x]))
        dev = (affine[1] - affine[0] - x[0] @ w.T).abs().max().item()
        tol = 1e3 * torch.finfo(dtype).eps * max(1.0, w.abs().max().item()) * in_features ** 0.5
        if not dev <= tol:
            raise ValueError(f"linear_jacobian needs an affine map: f(x) - f(0) - W x deviates by {dev:.3g} "
                             f"(expected <= {tol:.3g}) at a random x")
    return w


def least_squares_hessian(model: Callable[[torch.Tensor], torch.Tensor], in_features: int | None = None,
                          **kwargs) -> torch.Tensor:
    """The Hessian 2 W^T W (in, in) of x -> ||f(x) - y||^2 for an affine f with Jacobian W (any x, y).

    Cost: :func:`linear_jacobian` plus one (in x out x in) matrix product. ``kwargs`` go to linear_jacobian.
    """
    w = linear_jacobian(model, in_features, **kwargs)
    return 2.0 * w.T @ w


def hvp(f: Callable[..., torch.Tensor], primals, tangents, *, method: str = "reverse"):
    """H v: the Hessian of the scalar ``f(*primals)`` applied to ``tangents`` (same structure as primals).

    ``method``: 'reverse' (double backward: the gradient of <grad f, v>, needs create_graph) or 'forward'
    (forward-over-reverse: ``torch.func.jvp`` of ``torch.func.grad``; usually the cheaper in memory).
    Either costs a small constant times one gradient. Returns a tensor or a tuple like ``primals``.
    """
    ps, single = _as_tuple(primals, "primals")
    vs, _ = _as_tuple(tangents, "tangents")
    _check_tangents(ps, vs)
    if method == "forward":
        out = jvp(grad(f, argnums=tuple(range(len(ps)))), ps, vs)[1]
    elif method == "reverse":
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in ps]
            value = f(*leaves)
            if value.numel() != 1:
                raise ValueError(f"hvp needs a scalar function, got output of shape {tuple(value.shape)}")
            gs = torch.autograd.grad(value, leaves, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(gs, vs))
            out = torch.autograd.grad(dot, leaves, allow_unused=True) if dot.requires_grad else (None,) * len(ps)
        out = tuple(torch.zeros_like(p) if h is None else h.detach() for p, h in zip(ps, out))
    else:
        raise ValueError(f"unknown hvp method {method!r}: expected 'reverse' or 'forward'")
    return out[0] if single else tuple(out)


def ggn_vp(model_fn: Callable[..., torch.Tensor], loss_fn: Callable[[torch.Tensor], torch.Tensor], primals,
           tangents):
    """Gauss-Newton product G v = J^T H_L J v with z = model_fn(*primals), J = dz/dprimals, H_L the Hessian of
    the scalar ``loss_fn(z)`` at z. G is positive semi-definite when the loss is convex in z.

    One forward-mode pass (J v), one loss HVP (cheap: the loss acts on z only), one reverse pass (J^T).
    Returns a tensor or a tuple like ``primals``.
    """
    ps, single = _as_tuple(primals, "primals")
    vs, _ = _as_tuple(tangents, "tangents")
    _check_tangents(ps, vs)
    z, jv = jvp(model_fn, ps, vs)
    hjv = hvp(loss_fn, z.detach(), jv.detach(), method="reverse")
    out = vjp(model_fn, *ps)[1](hjv)
    return out[0] if single else tuple(out)


def _params(model: nn.Module, tangents: dict) -> tuple[list[str], Tensors, Tensors]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    missing, extra = sorted(set(names) - set(tangents)), sorted(set(tangents) - set(names))
    if missing or extra:
        raise ValueError(f"tangents must have one entry per trainable parameter; missing {missing}, unknown {extra}")
    params = dict(model.named_parameters())
    return names, tuple(params[n].detach() for n in names), tuple(tangents[n] for n in names)


def param_hvp(model: nn.Module, loss_fn: Callable[[Callable], torch.Tensor], tangents: dict[str, torch.Tensor],
              *, method: str = "reverse") -> dict[str, torch.Tensor]:
    """H v with respect to ``model``'s trainable parameters. ``loss_fn(call)`` returns the scalar loss, where
    ``call(*inputs)`` runs the model; ``tangents``: {parameter name: tensor of its shape}. Returns such a dict."""
    names, ps, vs = _params(model, tangents)

    def f(*values):
        bound = dict(zip(names, values))
        return loss_fn(lambda *inputs: functional_call(model, bound, inputs))

    return dict(zip(names, hvp(f, ps, vs, method=method)))


def param_ggn_vp(model: nn.Module, inputs: Sequence[torch.Tensor] | torch.Tensor,
                 loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gauss-Newton product J^T H_L J v with respect to ``model``'s trainable parameters, z = model(*inputs),
    loss ``loss_fn(z)``. ``tangents``: {parameter name: tensor of its shape}; returns such a dict."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    names, ps, vs = _params(model, tangents)

    def model_fn(*values):
        return functional_call(model, dict(zip(names, values)), inputs)

    return dict(zip(names, ggn_vp(model_fn, loss_fn, ps, vs)))
