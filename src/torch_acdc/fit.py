"""Fit structured stacks to dense matrices (or to input-output pairs) with Adam or L-BFGS.

:func:`fit_dense` approximates a dense (out x in) matrix W by a linear stack (``StackedACDC`` or any class
with the same constructor and ``to_dense()``) by minimising the squared *relative Frobenius error*

    error(W_hat, W) = ||W_hat - W||_F / ||W||_F

on the matrix itself (the stack's ``to_dense()``, i.e. the stack applied to the identity): deterministic, no
sampling noise, and scale-free (0 is exact, 1 is as good as the zero matrix). One step costs one forward and
backward of the stack on an (in x in) identity: O(depth * in * N log N) for N = max(in, out).

:func:`minimise` is the optimisation loop it is built on; experiments use it for other objectives too
(e.g. mean-squared error on (x, y) pairs).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .layers import StackedACDC

__all__ = ["FitResult", "fit_dense", "minimise", "relative_error", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "lbfgs")


@dataclass
class FitResult:
    """Outcome of :func:`fit_dense`.

    module: the fitted stack (linear, no activation), ``module.to_dense() ≈ weight``.
    error: final relative Frobenius error ||W_hat - W||_F / ||W||_F.
    history: error before each step, then the final error (``len == steps + 1``, ``history[-1] == error``).
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


def _make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "lbfgs":
        # One L-BFGS iteration per step() call, so `steps` counts iterations; max_eval bounds the evaluations
        # of one call (1 + the strong-Wolfe line search's; torch's default for max_iter=1 would allow none).
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=1 + 25, history_size=50,
                                 line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {OPTIMIZERS}")


def minimise(params: Iterable[torch.Tensor], objective: Callable[[], torch.Tensor], *, optimizer: str = "adam",
             steps: int, lr: float, progress: bool = False, desc: str | None = None,
             transform: Callable[[float], float] | None = None) -> list[float]:
    """Minimise ``objective()`` (a scalar loss of ``params``) for ``steps`` Adam or L-BFGS iterations.

    Returns the history: the loss before each step, then the final loss (``steps + 1`` values), each passed
    through ``transform`` if given (e.g. ``math.sqrt`` to log an error from a squared-error loss).
    For L-BFGS the objective is memoised on the parameter values, so re-evaluating at the point where the
    previous line search ended costs nothing (one iteration = the line search's evaluations only).
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    params = [p for p in params if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr)
    cache: dict = {}

    def closure() -> torch.Tensor:
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        if "flat" in cache and torch.equal(flat, cache["flat"]):
            return cache["loss"]  # grads still hold this point's gradient
        opt.zero_grad()
        loss = objective()
        loss.backward()
        cache.update(flat=flat, loss=loss.detach())
        return cache["loss"]

    fmt = transform or (lambda v: v)
    history = []
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    for _ in range(steps):
        if optimizer == "lbfgs":
            loss = closure()
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
        history.append(fmt(float(objective())))
    return history


def fit_dense(weight: torch.Tensor, depth: int, permutation="random", *, optimizer: str = "adam", steps: int,
              lr: float, seed: int | None = None, progress: bool = False, layer_cls=StackedACDC,
              init: str = "paper", bias: bool = True) -> FitResult:
    """Fit a linear ``layer_cls(in, out, depth, permutation=..., bias=..., init=...)`` to ``weight`` (out, in).

    Minimises relative_error(module.to_dense(), weight)^2 with ``optimizer`` ('adam' or 'lbfgs'; L-BFGS
    usually wants lr=1) for ``steps`` iterations. The module is built on ``weight``'s device and dtype; with a
    ``seed`` its initialisation and permutations are drawn from a private RNG (global RNG state untouched).
    Biases (``bias=True``) are created zero and left untouched: copy a dense layer's bias into
    ``module.bias[-1, :out]`` to carry it over. Cost per step: one forward+backward of the stack on an
    (in x in) identity.
    """
    if weight.dim() != 2:
        raise ValueError(f"fit_dense expected a 2-D (out, in) weight, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"fit_dense expected a floating-point weight, got dtype {weight.dtype}")
    target = weight.detach()
    if not torch.linalg.matrix_norm(target) > 0:
        raise ValueError("fit_dense expected a non-zero weight (the relative error is undefined for W = 0)")
    out_features, in_features = target.shape
    with torch.random.fork_rng(devices=[target.device] if target.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        module = layer_cls(in_features, out_features, depth, permutation=permutation, bias=bias, init=init,
                           device=target.device, dtype=target.dtype)
    target_sq = torch.linalg.matrix_norm(target).square()

    def objective() -> torch.Tensor:
        return torch.linalg.matrix_norm(module.to_dense() - target).square() / target_sq

    params = [p for name, p in module.named_parameters() if name.split(".")[-1] != "bias"]
    history = minimise(params, objective, optimizer=optimizer, steps=steps, lr=lr, progress=progress,
                       desc=f"fit depth {depth}", transform=lambda v: max(v, 0.0) ** 0.5)
    module.zero_grad(set_to_none=True)
    return FitResult(module=module, error=history[-1], history=history)
