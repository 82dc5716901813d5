"""Cost tables: parameters, multiply-adds and FLOPs of the classify models, and the dense/structured crossover.

Table 1: the ``acdc classify`` models (their default hyper-parameters, or those given here) at the sklearn
digits (64 features) and MNIST (784) sizes, per example. Table 2: for StackedACDC(n, n, depth) at several
widths n and batch sizes, the modelled cost (torch_acdc.cost.CostModel) of the structured form and of the
re-materialised nn.Linear, and which one ``for_inference`` would pick; with ``--measure`` also the measured
forward times and the measured winner. ``--calibrate`` first fits the cost model's constants to this machine.
"""
from __future__ import annotations

import argparse

from .. import cost
from ..experiments.common import format_table, make_run_dir, run_title, seed_everything, write_json
from ..experiments.cost_tables import crossover_rows, model_rows, plot_crossover
from .common import ACTIVATION_CHOICES, PERMUTATION_CHOICES, positive_int

FULL = {"widths": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], "batches": [1, 16, 256], "stack_depths": [1, 4]}
FAST = {"widths": [16, 256], "batches": [1, 64], "stack_depths": [1]}
FAST_HELP = "small crossover table (explicit flags win)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=positive_int, default=16, help="ACDC depth of the classify models")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden units of the dense MLP")
    p.add_argument("--width", type=positive_int, default=None)
    p.add_argument("--activation", default="relu", choices=ACTIVATION_CHOICES)
    p.add_argument("--widths", type=positive_int, nargs="+", default=None)
    p.add_argument("--batches", type=positive_int, nargs="+", default=None)
    p.add_argument("--stack-depths", type=positive_int, nargs="+", default=None,
                   help="depths in the crossover table")
    p.add_argument("--calibrate", action="store_true", help="measure the cost model's constants first")
    p.add_argument("--measure", action="store_true", help="also time both forms (forward, no grad)")
    p.add_argument("--repeats", type=positive_int, default=10)


def run(args: argparse.Namespace) -> int:
    seed_everything(args.seed)
    model = cost.calibrate(repeats=args.repeats) if args.calibrate else cost.DEFAULT_COST_MODEL
    models = model_rows(args)
    cross = crossover_rows(args.widths, args.batches, args.stack_depths, model, args.measure, args.repeats)
    out = make_run_dir(args.out, "cost", overwrite=args.overwrite)
    protocol = "cost model" + (" and measured forward times" if args.measure else "")
    plot_crossover(cross, out / "crossover.png",
                   run_title("StackedACDC(n, n, depth) vs its dense nn.Linear", data="random-init stacks",
                             protocol=protocol, seeds=args.seed, fast=args.fast))
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    write_json(out / "results.json", {"experiment": "cost", "config": config, "cost_model": vars(model),
                                      "units": "per example; mult_adds = real multiply-adds, flops = 2 x; "
                                               "costs in MAC-equivalents per call",
                                      "models": models, "crossover": cross})
    print("Classify models, per example (multiply-adds of linear maps; activations not counted):")
    print(format_table([{k: (int(v) if isinstance(v, float) else v) for k, v in r.items() if k != "unmodelled"}
                        for r in models]))
    print(f"\nDense vs structured, {model} (MAC-equivalents per forward call):")
    cols = ["depth", "n", "batch", "structured_cost", "dense_cost", "model_choice"]
    cols += ["structured_ms", "dense_ms", "measured_choice"] if args.measure else []
    print(format_table(cross, cols, floatfmt=".3g"))
    if args.measure:
        agree = sum(r["model_choice"] == r["measured_choice"] for r in cross)
        print(f"model and measurement agree on {agree}/{len(cross)} cases")
    print(f"results: {out / 'results.json'}, plot: {out / 'crossover.png'}")
    return 0
