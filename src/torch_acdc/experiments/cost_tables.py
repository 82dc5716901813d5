"""Cost tables for ``acdc cost``: parameters, multiply-adds and FLOPs of the classify models, and the
modelled (optionally measured) dense/structured crossover of StackedACDC."""
from __future__ import annotations

import torch

from .. import cost
from ..bench import median_ms
from ..layers import StackedACDC
from . import classify
from .common import new_figure, save_figure

__all__ = ["SIZES", "model_rows", "crossover_rows", "plot_crossover"]

SIZES = {"sklearn-digits": 64, "mnist": 784}


def model_rows(args) -> list[dict]:
    """Cost of every classify model (built from ``args``: depth, hidden, width, activation) at the digits and
    MNIST input sizes, per example."""
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


def plot_crossover(rows: list[dict], path) -> None:
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
