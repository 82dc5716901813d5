"""Fit structured stacks to dense matrices (or to input-output pairs) with Adam or L-BFGS.

:func:`fit_dense` approximates a dense (out x in) matrix W by a linear stack (``StackedACDC`` or any class
with the same constructor and ``to_dense()``) by minimising the squared *relative Frobenius error*

    error(W_hat, W) = ||W_hat - W||_F / ||W||_F

on the matrix itself (the stack applied to the identity): deterministic, no sampling noise, and scale-free
(0 is exact, 1 is as good as the zero matrix). One step costs one forward and backward of the stack on an
(in x in) identity, O(depth * in * N log N) for N = max(in, out); stacks up to DENSE_EVAL_MAX_FEATURES wide
are instead evaluated by :func:`stack_matrix` (dense per-layer matrices, faster at those sizes).

:func:`minimise` is the optimisation loop it is built on; experiments use it for other objectives too
(e.g. mean-squared error on (x, y) pairs).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .functional import acdc_reference
from .layers import StackedACDC
from .transform import compute_dtype
from .progress import progress_bar

__all__ = ["FitResult", "fit_dense", "minimise", "relative_error", "stack_matrix", "matrix_evaluator",
           "OPTIMIZERS", "DENSE_EVAL_MAX_FEATURES"]

OPTIMIZERS = ("adam", "lbfgs")
DENSE_EVAL_MAX_FEATURES = 128  # fit_dense evaluates stacks up to this width with stack_matrix


def _layer_reference(module: nn.Module):
    if isinstance(module, StackedACDC):
        return acdc_reference
    from .afdf import StackedAFDF, afdf_reference

    if isinstance(module, StackedAFDF):
        return afdf_reference
    return None


def stack_matrix(module: nn.Module) -> torch.Tensor:
    """The (out x in) matrix of a linear StackedACDC / StackedAFDF, built from dense per-layer reference
    matrices (float64): W = T L_K P_{K-1} ... P_1 L_1 Z (Z zero-pads, P are the shuffles, T truncates).

    The same map as ``module.to_dense()``, differentiable, O(depth N^3) in a few large ops instead of many
    small ones: for small N (a few hundred features or less) it is several times faster than evaluating
    the structured layers on an identity, because their cost there is per-call overhead, not arithmetic.
    """
    reference = _layer_reference(module)
    if reference is None or module.activation is not None:
        raise TypeError(f"stack_matrix expects a linear StackedACDC or StackedAFDF, got {module!r}")
    eye = torch.eye(module.features, dtype=torch.float64, device=module.a.device)
    layers = torch.vmap(reference, in_dims=(None, 0, 0))(eye, module.a, module.d).mT  # (depth, N, N) L_i
    w = layers[0]
    for i in range(1, module.depth):
        w = layers[i] @ (w[module.perms[i - 1]] if module.permutation is not None else w)
    return w[: module.out_features, : module.in_features]


def matrix_evaluator(module: nn.Module) -> Callable[[], torch.Tensor]:
    """A zero-argument function returning ``module``'s current (out x in) matrix, differentiably:
    :func:`stack_matrix` for stacks up to DENSE_EVAL_MAX_FEATURES wide (faster there), else ``to_dense``."""
    if _layer_reference(module) is not None and module.features <= DENSE_EVAL_MAX_FEATURES:
        return lambda: stack_matrix(module)
    return module.to_dense


@dataclass
class FitResult:
    """Outcome of :func:`fit_dense`.

    module: the fitted stack (linear, no activation), ``module.to_dense() ≈ weight``.
    error: final relative Frobenius error ||W_hat - W||_F / ||W||_F.
    history: error before each step, then the final error (``history[-1] == error``; ``steps + 1`` values,
    fewer if L-BFGS converged early).
    """

    module: nn.Module
    error: float
    history: list[float] = field(default_factory=list)


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||approx - target||_F / ||target||_F as a 0-d tensor (differentiable in ``approx``)."""
    if approx.shape != target.shape:
        raise ValueError(f"relative_error expected matching shapes, got {tuple(approx.shape)} and "
                         f"{tuple(target.shape)}")
    return torch.linalg.matrix_norm(approx - target) / torch.linalg.matrix_norm(target)


def _make_optimizer(name: str, params: list, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "lbfgs":
        # One L-BFGS iteration per step() call, so `steps` counts iterations; max_eval bounds the evaluations
        # of one call (1 + the strong-Wolfe line search's; torch's default for max_iter=1 would allow none).
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=1 + 25, history_size=10,
                                 line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {OPTIMIZERS}")


def minimise(params: Iterable, objective: Callable[[], torch.Tensor], *, optimizer: str = "adam", steps: int,
             lr: float, progress: bool = False, desc: str | None = None,
             transform: Callable[[float], float] | None = None) -> list[float]:
    """Minimise ``objective()`` (a scalar loss of ``params``) for ``steps`` Adam or L-BFGS iterations.

    ``params``: tensors, or Adam parameter groups (e.g. from :func:`torch_acdc.recipe.param_groups`).
    Returns the history: the loss before each step, then the final loss (``steps + 1`` values), each passed
    through ``transform`` if given (e.g. ``math.sqrt`` to log an error from a squared-error loss).
    For L-BFGS the objective is memoised on the parameter values, so re-evaluating at the point where the
    previous line search ended costs nothing (one iteration = the line search's evaluations only), and the
    loop stops early, with a shorter history, once an iteration fails to lower the loss (converged: further
    iterations would only repeat the failed line search); if a line search ends at a non-finite or higher loss
    than the best point it evaluated, the parameters are set back to that best point (the final history entry
    is its loss).
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    params = list(params)
    if not (params and isinstance(params[0], dict)):
        params = [p for p in params if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr)
    tensors = [p for group in opt.param_groups for p in group["params"]]
    cache: dict = {}

    def closure() -> torch.Tensor:
        flat = torch.cat([p.detach().reshape(-1) for p in tensors])
        if "flat" in cache and torch.equal(flat, cache["flat"]):
            return cache["loss"]  # grads still hold this point's gradient
        opt.zero_grad()
        loss = objective()
        loss.backward()
        cache.update(flat=flat, loss=loss.detach())
        value = float(cache["loss"])
        if math.isfinite(value) and value < cache.get("best_loss", math.inf):
            cache.update(best=flat, best_loss=value)
        return cache["loss"]

    fmt = transform or (lambda v: v)
    history = []
    bar = progress_bar(total=steps, desc=desc, enabled=progress, leave=False)
    previous = math.inf
    for _ in range(steps):
        if optimizer == "lbfgs":
            loss = closure()
            if not float(loss) < previous:  # no progress, or a non-finite loss: stop
                break
            previous = float(loss)
            opt.step(closure)
        else:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            opt.step()
            loss = loss.detach()
        history.append(fmt(float(loss)))
        bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
        bar.update()
    bar.close()
    with torch.no_grad():
        final = float(objective())
        if optimizer == "lbfgs" and "best" in cache and not final <= cache["best_loss"]:
            offset = 0  # a line search blew up: back to the best point evaluated
            for p in tensors:
                p.copy_(cache["best"][offset:offset + p.numel()].view_as(p))
                offset += p.numel()
            final = float(objective())
        history.append(fmt(final))
    return history


def fit_dense(weight: torch.Tensor, depth: int, permutation="random", *, optimizer: str = "adam", steps: int,
              lr: float, seed: int | None = None, progress: bool = False, layer_cls=StackedACDC,
              init: str = "paper", bias: bool = True) -> FitResult:
    """Fit a linear ``layer_cls(in, out, depth, permutation=..., bias=..., init=...)`` to ``weight`` (out, in).

    Minimises relative_error(module.to_dense(), weight)^2 with ``optimizer`` ('adam' or 'lbfgs'; L-BFGS
    usually wants lr=1) for ``steps`` iterations. Stacks of width <= DENSE_EVAL_MAX_FEATURES are evaluated
    with :func:`stack_matrix` (same matrix, faster at those sizes), wider ones with ``to_dense()``. The module is built on ``weight``'s device and dtype; with a
    ``seed`` its initialisation and permutations are drawn from a private RNG (global RNG state untouched).
    float16 / bfloat16 weights are fitted in float32 (Adam's state and steps underflow in half precision) and the
    module is then cast to ``weight``'s dtype; ``error`` (``history[-1]``) is measured after that cast.
    A non-finite error raises FloatingPointError (e.g. too large an ``lr``). Biases (``bias=True``) are
    created zero and left untouched: copy a dense layer's bias into
    ``module.bias[-1, :out]`` to carry it over. Cost per step: one forward+backward of the stack on an
    (in x in) identity.
    """
    if weight.dim() != 2:
        raise ValueError(f"fit_dense expected a 2-D (out, in) weight, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"fit_dense expected a floating-point weight, got dtype {weight.dtype}")
    target = weight.detach().to(compute_dtype(weight.dtype))
    if not torch.isfinite(target).all():
        raise ValueError("fit_dense expected a finite weight, got one with NaN or infinite entries")
    if not torch.linalg.matrix_norm(target) > 0:
        raise ValueError("fit_dense expected a non-zero weight (the relative error is undefined for W = 0)")
    out_features, in_features = target.shape
    with torch.random.fork_rng(devices=[target.device] if target.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        module = layer_cls(in_features, out_features, depth, permutation=permutation, bias=bias, init=init,
                           device=target.device, dtype=target.dtype)
    matrix = matrix_evaluator(module)

    def objective() -> torch.Tensor:
        return relative_error(matrix().to(target.dtype), target).square()

    params = [p for name, p in module.named_parameters() if name.split(".")[-1] != "bias"]
    history = minimise(params, objective, optimizer=optimizer, steps=steps, lr=lr, progress=progress,
                       desc=f"fit depth {depth}", transform=lambda v: max(v, 0.0) ** 0.5)
    module.zero_grad(set_to_none=True)
    if weight.dtype != target.dtype:
        module.to(weight.dtype)
        with torch.no_grad():
            history[-1] = relative_error(matrix_evaluator(module)().to(target.dtype), target).item()
    if not math.isfinite(history[-1]):
        raise FloatingPointError(f"fit_dense diverged: the error is {history[-1]} after {steps} {optimizer} steps "
                                 f"at lr={lr} (history starts {history[:3]}); try a smaller lr")
    return FitResult(module=module, error=history[-1], history=history)
