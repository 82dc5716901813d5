"""Cost tables: parameters, multiply-adds and FLOPs of the classify models, and the dense/structured crossover.

Table 1: the ``acdc classify`` models (their default hyper-parameters, or those given here) at the sklearn
digits (64 features) and MNIST (784) sizes, per example. Table 2: for StackedACDC(n, n, depth) at several
widths n and batch sizes, the modelled cost (torch_acdc.cost.CostModel) of the structured form and of the
re-materialised nn.Linear, and which one ``for_inference`` would pick; with ``--measure`` also the measured
forward times and the measured winner. ``--calibrate`` first fits the cost model's constants to this machine.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from . import cost
from .bench import median_ms
from .experiments import classify
from .experiments.common import format_table, make_run_dir, new_figure, save_figure, write_json
from .layers import StackedACDC

SIZES = {"sklearn-digits": 64, "mnist": 784}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=int, default=16, help="ACDC depth of the classify models")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the dense MLP")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--activation", default="relu")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--stack-depths", type=int, nargs="+", default=[1, 4], help="depths in the crossover table")
    p.add_argument("--calibrate", action="store_true", help="measure the cost model's constants first")
    p.add_argument("--measure", action="store_true", help="also time both forms (forward, no grad)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--fast", action="store_true", help="widths 16 and 256, batches 1 and 64, depth 1")
    p.add_argument("--out", default=None, help="run folder (default runs/cost-<time>)")


def model_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for dataset, features in SIZES.items():
        for name in classify.MODELS:
            model = classify.build_model(name, features, 10, args)
            report = cost.model_cost(model, (1, features))
            total = report.total
            rows.append({"dataset": dataset, "model": name, "params": total.params,
                         "mult_adds": total.mult_adds, "flops": total.flops, "unmodelled": report.unmodelled})
    return rows


def crossover_rows(widths, batches, depths, model: cost.CostModel, measure: bool, repeats: int) -> list[dict]:
    rows = []
    for depth in depths:
        for n in widths:
            stack = StackedACDC(n, n, depth).eval()
            dense = cost.freeze(stack)
            for batch in batches:
                decision = cost.plan_inference(stack, batch, model)[0]
                row = {"depth": depth, "n": n, "batch": batch, "structured_cost": decision.structured,
                       "dense_cost": decision.dense, "model_choice": decision.choice}
                if measure:
                    x = torch.randn(batch, n)
                    with torch.no_grad():
                        row["structured_ms"] = median_ms(lambda: stack(x), repeats)
                        row["dense_ms"] = median_ms(lambda: dense(x), repeats)
                    row["measured_choice"] = "dense" if row["dense_ms"] < row["structured_ms"] else "structured"
                rows.append(row)
    return rows


def _plot(rows: list[dict], path) -> None:
    depths = sorted({r["depth"] for r in rows})
    fig, axes = new_figure(ncols=len(depths), figsize=(5 * len(depths), 3.8), squeeze=False, sharey=True)
    for ax, depth in zip(axes[0], depths):
        for i, batch in enumerate(sorted({r["batch"] for r in rows})):
            rs = [r for r in rows if r["depth"] == depth and r["batch"] == batch]
            ax.plot([r["n"] for r in rs], [r["dense_cost"] / r["structured_cost"] for r in rs], marker="o",
                    color=f"C{i}", label=f"model, B={batch}")
            if "dense_ms" in rs[0]:
                ax.plot([r["n"] for r in rs], [r["dense_ms"] / r["structured_ms"] for r in rs], ls="--",
                        marker="x", color=f"C{i}", label=f"measured, B={batch}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"StackedACDC depth {depth}")
        ax.set_xlabel("width n")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("dense cost / structured cost (>1: structured wins)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    if args.fast:
        args.widths, args.batches, args.stack_depths = [16, 256], [1, 64], [1]
    model = cost.calibrate(repeats=args.repeats) if args.calibrate else cost.DEFAULT_COST_MODEL
    models = model_rows(args)
    cross = crossover_rows(args.widths, args.batches, args.stack_depths, model, args.measure, args.repeats)
    out = make_run_dir(args.out, "cost", overwrite=getattr(args, "overwrite", False))
    _plot(cross, out / "crossover.png")
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
