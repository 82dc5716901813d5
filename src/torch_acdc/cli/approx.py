"""Approximate a dense matrix with structured stacks of depth 1..32: error vs parameters, per permutation kind."""
from __future__ import annotations

import argparse

from ..experiments import approx as lib
from ..experiments.common import format_table, make_run_dir, run_title, write_json
from ..fit import OPTIMIZERS
from .common import UsageError, positive_float, positive_int
from ..progress import progress_bar

DESCRIPTION = lib.__doc__
FULL = {"n": 32, "depths": [1, 2, 4, 8, 16, 32], "seeds": 5, **lib.DEFAULTS}
FAST = lib.FAST
FAST_HELP = "quick smoke run (explicit flags win)"


TIMES = True  # the busy-machine hint (cli.common)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=lib.PROTOCOLS, default="matrix")
    p.add_argument("--matrix", default=None, help="matrix protocol: approximate this .npy/.pt matrix")
    p.add_argument("--layer", choices=("acdc", "afdf"), default="acdc")
    p.add_argument("--n", type=positive_int, default=None, help="size of the random n x n targets")
    p.add_argument("--depths", type=positive_int, nargs="+", default=None)
    p.add_argument("--permutations", nargs="+", choices=list(lib.PERMUTATIONS), default=list(lib.PERMUTATIONS))
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds --seed .. --seed + N - 1")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None, help="L-BFGS: 1; Adam: ~1e-2")


def run(args: argparse.Namespace) -> int:
    if args.protocol == "log" and args.matrix:
        raise UsageError("--matrix applies to the matrix protocol only")
    layer_cls = lib.layer_class(args.layer)
    matrix = lib.load_matrix(args.matrix) if args.matrix else None
    n = args.n if matrix is None else f"{matrix.shape[0]}x{matrix.shape[1]}"
    out = make_run_dir(args.out, "approx", overwrite=args.overwrite)
    seeds = range(args.seed, args.seed + args.seeds)
    jobs = [(perm, depth, seed) for perm in args.permutations for depth in args.depths for seed in seeds]
    bar = progress_bar(jobs, desc="approx", enabled=not args.no_progress)
    fits: dict[tuple, list[dict]] = {}
    for perm, depth, seed in bar:
        bar.set_postfix(perm=perm, depth=depth, seed=seed, refresh=False)
        fits.setdefault((perm, depth), []).append(
            lib.approximate(args.protocol, layer_cls, depth, lib.PERMUTATIONS[perm], seed, n=args.n, matrix=matrix,
                            optimizer=args.optimizer, steps=args.steps, lr=args.lr))
    compare = lib.compares_to_log(args.protocol, args.layer, args.n)
    rows = []
    for (perm, depth), runs in fits.items():
        row = {"permutation": perm, "depth": depth, **lib.summarise(runs)}
        if compare and depth in lib.RESEARCH_LOG[perm]:
            row["log_mean"], row["log_std"] = lib.RESEARCH_LOG[perm][depth]
        rows.append(row)
    metric = ("relative Frobenius error ||W_hat - W||_F / ||W||_F" if args.protocol == "matrix" else
              "final mean squared error over 100 x n outputs of y = W x + b, x ~ U(0,1)^n")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    baselines = lib.log_baselines(args.n, args.seeds, args.seed) if args.protocol == "log" else None
    target = ("file " + str(args.matrix) if matrix is not None else
              ("N(0,1) n x n" if args.protocol == "matrix" else "nn.Linear init W, b"))
    protocol = f"{args.protocol} ({args.optimizer}, {args.steps} steps)"
    titles = {name: run_title(f"{args.layer} stacks: {what}", data=f"{target}, n = {n}", protocol=protocol,
                              seeds=seeds, fast=args.fast)
              for name, what in (("errors", "final error vs parameters"), ("curves", "mean error during the fit"))}
    lib.plot_errors(rows, args.protocol, args.layer, compare, out / "error_vs_params.png", titles["errors"])
    lib.plot_curves(rows, out / "curves.png", titles["curves"])
    write_json(out / "results.json", {"experiment": "approx", "protocol": args.protocol, "metric": metric,
                                      "target": target, "n": n, "config": config, "rows": rows, "baselines": baselines})
    cols = ["permutation", "depth", "params", "error"] + (["research log"] if "log_mean" in rows[0] else [])
    table = [{"permutation": r["permutation"], "depth": r["depth"], "params": r["params"],
              "error": f"{r['error_mean']:.4g} ± {r['error_std']:.2g}",
              "research log": f"{r.get('log_mean', float('nan')):.4g} ± {r.get('log_std', float('nan')):.2g}"}
             for r in rows]
    print(f"{args.layer} stacks, protocol {args.protocol}: {metric}; mean ± std over {args.seeds} seeds")
    print(format_table(table, cols))
    if baselines:
        print("baselines (MSE): " + ", ".join(f"{k} {v:.3g}" for k, v in baselines.items()))
    print(f"results: {out / 'results.json'}, plots: {out / 'error_vs_params.png'}, {out / 'curves.png'}")
    return 0
