"""Reporting for :mod:`torch_acdc.experiments.compress`: the Markdown table and the figure."""
from __future__ import annotations

from pathlib import Path

from .common import new_figure, save_figure

__all__ = ["compress_rows", "plot_compress"]


def compress_rows(result: dict) -> list[dict]:
    """One table row per variant: parameters, time per batch, held-out cosine and NN agreement."""
    rows = []
    for r in result["rows"]:
        fitted = r.get("after_fit") or {}
        rows.append({"variant": r["variant"], "params": r["params"], "FFN params": r["ffn_params"],
                     "ms/batch": round(1000 * r["seconds_per_batch"], 1), "cosine": r["cosine"],
                     "NN@1": r["nn@1"], "NN@10": r["nn@10"],
                     "cosine after fit only": fitted.get("cosine", ""),
                     "cost model": r["cost_model_choice"] or ""})
    return rows


def plot_compress(result: dict, path: Path, title: str) -> Path:
    """Left: cosine / NN@1 / NN@10 against replaced-layer parameters; right: distillation loss curves."""
    fig, (ax, ax_loss) = new_figure(ncols=2, figsize=(12, 4.5))
    markers = {"cosine": "o", "nn@1": "s", "nn@10": "^"}
    for kind, colour in (("acdc", "C0"), ("svd", "C1")):
        runs = [r for r in result["rows"] if r["kind"] == kind and r.get("after_fit")]
        for metric, marker in markers.items():
            ax.plot([r["replaced_params"] for r in runs], [r[metric] for r in runs], color=colour, marker=marker,
                    ls="-" if kind == "acdc" else "--", label=f"{kind} {metric}")
        for r in runs:
            ax_loss.plot(r["distil_loss"], color=colour, ls="-" if kind == "acdc" else "--", label=r["variant"])
    for r in result["rows"]:
        if r["kind"] == "acdc" and not r.get("after_fit"):
            ax.scatter([r["replaced_params"]], [r["cosine"]], color="grey", marker="x", label=r["variant"] + " cosine")
    ax.set(xscale="log", xlabel="parameters of the replaced layers", ylabel="agreement with the original",
           title="held-out sentences")
    ax_loss.set(xlabel="distillation step", ylabel="1 - cos (training batch)", title="distillation",
                yscale="log")
    for a in (ax, ax_loss):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
