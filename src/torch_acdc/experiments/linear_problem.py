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

import argparse
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..fit import minimise
from ..layers import StackedACDC
from ..recipe import param_groups
from .common import format_table, make_run_dir, new_figure, save_figure, write_json

__all__ = ["make_problem", "train_stack", "add_arguments", "run", "THRESHOLD"]

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--target", choices=("linear-init", "gaussian"), default="linear-init")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--permutations", nargs="+", choices=list(PERMUTATIONS), default=list(PERMUTATIONS))
    p.add_argument("--steps", type=int, default=1000, help="full-batch Adam iterations")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-mult", type=float, default=None,
                   help="learning-rate multiplier for both diagonals (default: the paper's x24 A, x12 D)")
    p.add_argument("--no-bias", action="store_true", help="bias-free stacks (as in the research log)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help=f"quick smoke run: {FAST}")
    p.add_argument("--out", default=None, help="run folder (default runs/linear-problem-<time>)")
    p.add_argument("--no-progress", action="store_true")


def _plot(rows: list[dict], baseline: float, path) -> None:
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


def run(args: argparse.Namespace) -> int:
    if args.fast:
        for key, value in FAST.items():
            setattr(args, key, value)
    x, y = make_problem(args.n, args.samples, args.target, args.seed)
    mult = None if args.lr_mult is None else {"A": args.lr_mult, "D": args.lr_mult}
    out = make_run_dir(args.out, "linear-problem", overwrite=getattr(args, "overwrite", False))
    jobs = [(perm, depth) for perm in args.permutations for depth in args.depths]
    rows = []
    for perm, depth in tqdm(jobs, desc="linear-problem", disable=args.no_progress):
        res = train_stack(x, y, depth, PERMUTATIONS[perm], bias=not args.no_bias, steps=args.steps, lr=args.lr,
                          lr_multipliers=mult, seed=args.seed, progress=not args.no_progress)
        rows.append({"permutation": perm, "depth": depth, **res})
    baseline = y.var(0, correction=0).mean().item()  # MSE of predicting each output's mean
    _plot(rows, baseline, out / "loss_curves.png")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    write_json(out / "results.json", {"experiment": "linear-problem", "threshold": THRESHOLD, "config": config,
                                      "constant_predictor_mse": baseline, "rows": rows})
    table = [{"permutation": r["permutation"], "depth": r["depth"], "params": r["params"],
              "initial loss": r["history"][0], "final loss": r["final_loss"],
              f"first iter <= {THRESHOLD}": "-" if r["hit"] is None else r["hit"]} for r in rows]
    print(f"y = W x + b, n = {args.n}, {args.samples} pairs, target {args.target}, {args.steps} Adam iterations; "
          f"MSE of the best constant predictor: {baseline:.4g}")
    print(format_table(table))
    print(f"results: {out / 'results.json'}, plot: {out / 'loss_curves.png'}")
    return 0
