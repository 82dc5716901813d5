"""The paper's Section 6.1 linear problem: learn y = W x + b from (x, y) pairs with deep ACDC stacks.

Setup as the research log implemented it (pytorch-acdc ``linear_layer_approx.py``): n = 32, W and b drawn like
``nn.Linear``'s default init (U(-1/sqrt(n), 1/sqrt(n))), 10000 inputs x ~ U(0, 1)^n, the MSE loss on all
pairs, 1000 full-batch Adam iterations at lr 1e-3 (on :func:`torch_acdc.recipe.param_groups`: the paper's
x24 / x12 learning rates for the diagonals unless ``--lr-mult 1``). ``--target gaussian`` uses W ~ N(0, 1/n)
and b = 0 instead. Stacks: StackedACDC(n, n, depth) with a bias per layer (``--no-bias``: none, as in the log)
for every depth and permutation kind. Reported: the loss curves, the final loss, the first iteration
at which the loss is <= the threshold (0.02, the log's "final loss 0.0198 after 1000 iterations"), and the
MSE of the best constant predictor (each output's mean) as the baseline a useful fit must beat.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..fit import minimise
from ..layers import StackedACDC
from ..recipe import param_groups
from .common import new_figure, save_figure

__all__ = ["make_problem", "train_stack", "plot_losses", "THRESHOLD", "PERMUTATIONS", "FAST"]

THRESHOLD = 0.02
PERMUTATIONS = {"random": "random", "riffle": "riffle", "none": None}
FAST = {"n": 16, "samples": 500, "steps": 150, "depths": [1, 4], "permutations": ["random", "none"]}


def make_problem(n: int, samples: int, target: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (samples, n), y (samples, n)) with y = x W^T + b; ``target`` 'linear-init' or 'gaussian'."""
    g = torch.Generator().manual_seed(seed)
    if target == "linear-init":
        bound = 1.0 / math.sqrt(n)
        w = (2 * torch.rand(n, n, generator=g) - 1) * bound
        b = (2 * torch.rand(n, generator=g) - 1) * bound
    elif target == "gaussian":
        w, b = torch.randn(n, n, generator=g) / math.sqrt(n), torch.zeros(n)
    else:
        raise ValueError(f"unknown target {target!r}: expected 'linear-init' or 'gaussian'")
    x = torch.rand(samples, n, generator=g)
    return x, x @ w.T + b


def train_stack(x: torch.Tensor, y: torch.Tensor, depth: int, permutation, *, bias: bool, steps: int, lr: float,
                lr_multipliers: dict[str, float] | None, seed: int, progress: bool = False) -> dict:
    """Full-batch Adam on MSE(StackedACDC(x), y); returns {"history", "final_loss", "params", "hit"}.

    ``hit``: the first iteration whose loss is <= THRESHOLD (None if never).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stack = StackedACDC(x.shape[-1], y.shape[-1], depth, permutation=permutation, bias=bias)
    history = minimise(param_groups(stack, lr, 0.0, lr_multipliers), lambda: F.mse_loss(stack(x), y),
                       optimizer="adam", steps=steps, lr=lr, progress=progress, desc=f"depth {depth}")
    hit = next((i for i, loss in enumerate(history) if loss <= THRESHOLD), None)
    return {"history": history, "final_loss": history[-1], "hit": hit,
            "params": sum(p.numel() for p in stack.parameters())}


def plot_losses(rows: list[dict], baseline: float, path) -> None:
    fig, ax = new_figure(figsize=(7, 4.5))
    styles = {"random": "-", "riffle": "--", "none": ":"}
    colors = {d: f"C{i}" for i, d in enumerate(sorted({r["depth"] for r in rows}))}
    for r in rows:
        ax.plot(range(len(r["history"])), r["history"], ls=styles[r["permutation"]], color=colors[r["depth"]],
                label=f"depth {r['depth']}, {r['permutation']}")
    ax.axhline(THRESHOLD, color="k", lw=0.8, alpha=0.5, label=f"threshold {THRESHOLD}")
    ax.axhline(baseline, color="k", lw=0.8, ls=":", label="best constant predictor")
    ax.set_yscale("log")
    ax.set_xlabel("Adam iteration (full batch)")
    ax.set_ylabel("MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)
