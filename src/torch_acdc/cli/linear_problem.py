"""The paper's Section 6.1 linear problem: learn y = W x + b from (x, y) pairs with deep ACDC stacks."""
from __future__ import annotations

import argparse

from ..experiments import linear_problem as lib
from ..experiments.common import format_table, make_run_dir, run_title, write_json
from .common import positive_float, positive_int
from ..progress import progress_bar

DESCRIPTION = lib.__doc__
FULL = {"n": 32, "samples": 10000, "steps": 1000, "depths": [1, 2, 4, 8, 16, 32],
        "permutations": list(lib.PERMUTATIONS)}
FAST = lib.FAST
FAST_HELP = "quick smoke run (explicit flags win)"


TIMES = True  # the busy-machine hint (cli.common)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=None)
    p.add_argument("--samples", type=positive_int, default=None)
    p.add_argument("--target", choices=("linear-init", "gaussian"), default="linear-init")
    p.add_argument("--depths", type=positive_int, nargs="+", default=None)
    p.add_argument("--permutations", nargs="+", choices=list(lib.PERMUTATIONS), default=None)
    p.add_argument("--steps", type=positive_int, default=None, help="full-batch Adam iterations")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--lr-mult", type=positive_float, default=None,
                   help="learning-rate multiplier for both diagonals (default: the paper's x24 A, x12 D)")
    p.add_argument("--no-bias", action="store_true", help="bias-free stacks (as in the research log)")


def run(args: argparse.Namespace) -> int:
    x, y = lib.make_problem(args.n, args.samples, args.target, args.seed)
    mult = None if args.lr_mult is None else {"A": args.lr_mult, "D": args.lr_mult}
    out = make_run_dir(args.out, "linear-problem", overwrite=args.overwrite)
    jobs = [(perm, depth) for perm in args.permutations for depth in args.depths]
    rows = []
    for perm, depth in progress_bar(jobs, desc="linear-problem", enabled=not args.no_progress):
        res = lib.train_stack(x, y, depth, lib.PERMUTATIONS[perm], bias=not args.no_bias, steps=args.steps,
                              lr=args.lr, lr_multipliers=mult, seed=args.seed, progress=not args.no_progress)
        rows.append({"permutation": perm, "depth": depth, **res})
    baseline = y.var(0, correction=0).mean().item()  # MSE of predicting each output's mean
    title = run_title("linear problem: StackedACDC loss curves",
                      data=f"y = W x + b, n = {args.n}, {args.samples} pairs, target {args.target}",
                      protocol=f"{args.steps} full-batch Adam iterations, lr {args.lr:g}", seeds=args.seed,
                      fast=args.fast)
    lib.plot_losses(rows, baseline, out / "loss_curves.png", title)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    write_json(out / "results.json", {"experiment": "linear-problem", "threshold": lib.THRESHOLD, "config": config,
                                      "constant_predictor_mse": baseline, "rows": rows})
    table = [{"permutation": r["permutation"], "depth": r["depth"], "params": r["params"],
              "initial loss": r["history"][0], "final loss": r["final_loss"],
              f"first iter <= {lib.THRESHOLD}": "-" if r["hit"] is None else r["hit"]} for r in rows]
    print(f"y = W x + b, n = {args.n}, {args.samples} pairs, target {args.target}, {args.steps} Adam iterations; "
          f"MSE of the best constant predictor: {baseline:.4g}")
    print(format_table(table))
    print(f"results: {out / 'results.json'}, plot: {out / 'loss_curves.png'}")
    return 0
