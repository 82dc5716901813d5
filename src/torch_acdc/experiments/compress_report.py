"""Reporting for :mod:`torch_acdc.experiments.compress`: the Markdown table and the figure."""
from __future__ import annotations

from pathlib import Path

from .common import new_figure, save_figure

__all__ = ["compress_rows", "plot_compress"]


def _spread(r: dict, metric: str) -> str:
    lo_hi = (r.get("spread") or {}).get(metric)
    return f"{lo_hi[0]:.3f}..{lo_hi[1]:.3f}" if lo_hi else ""


def compress_rows(result: dict) -> list[dict]:
    """One table row per variant: parameters, time per batch, the chosen learning rate and distillation steps,
    held-out cosine and NN agreement (means over seeds, with the range)."""
    rows = []
    for r in result["rows"]:
        fitted = r.get("after_fit") or {}
        rows.append({"variant": r["variant"], "params": r["params"], "FFN params": r["ffn_params"],
                     "ms/batch": round(1000 * r["seconds_per_batch"], 1), "lr": r.get("chosen_lr", ""),
                     "steps": r.get("distil_steps", ""), "cosine": round(r["cosine"], 4),
                     "cosine range": _spread(r, "cosine"), "NN@1": round(r["nn@1"], 3),
                     "NN@10": round(r["nn@10"], 3), "NN@10 range": _spread(r, "nn@10"),
                     "cosine after fit only": round(fitted["cosine"], 4) if fitted else "",
                     "cost model": r["cost_model_choice"] or ""})
    return rows


def plot_compress(result: dict, path: Path, title: str) -> Path:
    """Cosine, NN@1, NN@10 against the replaced layers' parameters for ACDC depths and SVD ranks (seed range as
    error bars), with the original model and the FFN-removed floor marked."""
    fig, axes = new_figure(ncols=3, figsize=(14, 4.6))
    rows = result["rows"]
    marks = {r["kind"]: r for r in rows if r["kind"] in ("dense", "floor")}
    for ax, (metric, name) in zip(axes, (("cosine", "cosine"), ("nn@1", "NN@1"), ("nn@10", "NN@10"))):
        for kind, colour, ls in (("acdc", "C0", "-"), ("svd", "C1", "--")):
            runs = sorted((r for r in rows if r["kind"] == kind and r.get("after_fit")),
                          key=lambda r: r["replaced_params"])
            if not runs:
                continue
            x = [r["replaced_params"] for r in runs]
            y = [r[metric] for r in runs]
            lo = [y_i - r["spread"][metric][0] for y_i, r in zip(y, runs)]
            hi = [r["spread"][metric][1] - y_i for y_i, r in zip(y, runs)]
            label = "ACDC depth " + ",".join(str(r["depth"]) for r in runs) if kind == "acdc" else "SVD, same params"
            ax.errorbar(x, y, yerr=[lo, hi], color=colour, ls=ls, marker="o" if kind == "acdc" else "s",
                        capsize=3, label=label)
        if "dense" in marks:
            ax.axhline(marks["dense"][metric], color="k", lw=1, label="original model")
        if "floor" in marks:
            ax.axhline(marks["floor"][metric], color="grey", ls=":", lw=1.5, label="FFN removed (floor)")
        ax.set(xscale="log", xlabel="parameters of the replaced layers", ylabel=name, title=f"held-out {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
