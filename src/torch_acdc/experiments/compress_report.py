"""The figure of :mod:`torch_acdc.experiments.compress`: quality against parameters at the largest budget."""
from __future__ import annotations

from pathlib import Path

from .common import new_figure, save_figure

__all__ = ["plot_compress"]

_SERIES = (("ACDC, depth k", "C0", "-", "o"), ("ACDC + rank r", "C2", "-.", "^"), ("SVD, same params", "C1", "--", "s"))


def _series(family: str) -> str:
    return _SERIES[2][0] if family.startswith("svd") else _SERIES[1][0] if "+r" in family else _SERIES[0][0]


def plot_compress(record: dict, path: Path) -> Path:
    """Held-out cosine, NN@1, NN@10 against the replaced layers' parameters at the largest budget: ACDC
    depths, ACDC + low-rank and SVD (seed range as error bars, each family at its chosen LR), with the original
    model and the FFN-removed floor marked."""
    budget = max(record["protocol"]["budgets"])
    rows = [r for r in record["rows"] if r["budget s"] == budget]
    marks = {b["variant"]: b for b in record.get("baselines") or []}
    fig, axes = new_figure(ncols=3, figsize=(14, 4.6))
    for ax, (metric, name) in zip(axes, (("cosine", "cosine"), ("nn@1", "NN@1"), ("nn@10", "NN@10"))):
        for label, colour, ls, marker in _SERIES:
            runs = sorted((r for r in rows if _series(r["family"]) == label), key=lambda r: r["params"])
            if not runs:
                continue
            x, y = [r["params"] for r in runs], [r[metric] for r in runs]
            err = [[max(0, y_i - r["range"][metric][0]) for y_i, r in zip(y, runs)],
                   [max(0, r["range"][metric][1] - y_i) for y_i, r in zip(y, runs)]]
            ax.errorbar(x, y, yerr=err, color=colour, ls=ls, marker=marker, capsize=3, label=label)
            for r, xi, yi in zip(runs, x, y):
                ax.annotate(r["family"].split("-", 1)[1], (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        for key, style in (("original", {"color": "k", "lw": 1}), ("FFN removed (floor)", {"color": "grey", "ls": ":", "lw": 1.5})):
            if key in marks:
                ax.axhline(marks[key][metric], label=key, **style)
        ax.set(xscale="log", xlabel="parameters of the replaced layers", ylabel=name, title=f"held-out {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    m = record["plan"]["machine"]
    smoke = "[--fast smoke run] " if record.get("fast") else ""
    fig.suptitle(f"{smoke}all-MiniLM-L6-v2 FFNs replaced, {budget:g} s of measured distillation compute per family; "
                 f"{m['cpu']}, {m['threads']} threads; seeds {record['seeds']}", fontsize=9)
    return save_figure(fig, path)
