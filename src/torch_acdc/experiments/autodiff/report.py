"""Plots and the Markdown summary of ``acdc autodiff`` (every figure titled with data, protocol, --fast)."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

from ..common import format_table, new_figure, save_figure
from .matrix import GROUPS
from .scaling import METHODS

__all__ = ["write_report", "plot_scaling", "plot_ratio", "plot_forward", "plot_fd_error", "plot_symbolic",
           "plot_matrix", "summary_markdown"]

MARKERS = ("o", "s", "^", "D", "v", "x", "*", "P")
LINES = ("-", "--", ":", "-.")


def _wrap(protocol: str) -> str:
    return textwrap.fill(protocol, 110)


def _tag(fast: bool) -> str:
    return " [--fast run]" if fast else ""


def _decorate(ax, xlabel: str, ylabel: str, title: str | None = None, legend_size: int = 7) -> None:
    """Labels, title, log grid and legend of one axes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_size)


def plot_scaling(rows, fits, axis: str, path: Path, protocol: str, fast: bool) -> Path:
    """Gradient seconds against ``axis`` ('r_n_log2n' or 'r_n2'), log-log, one series per method."""
    key = "slope_vs_r_n_log_n" if axis == "r_n_log2n" else "slope_vs_r_n2"
    label = "r · n · log2 n" if axis == "r_n_log2n" else "r · n²"
    fig, ax = new_figure(figsize=(7.5, 5))
    for i, name in enumerate(METHODS):
        sel = [r for r in rows if r["method"] == name]
        if not sel:
            continue
        slope = next((f[key] for f in fits if f["method"] == name), math.nan)
        ax.loglog([r[axis] for r in sel], [r["grad_s"] for r in sel], MARKERS[i], ls="none", alpha=0.8,
                  label=f"{name} (fitted slope {slope:.2f})")
    _decorate(ax, label, "gradient time [s] (forward + backward)",
              f"Gradient time vs {label}: n = 2^k, depth r\n{_wrap(protocol)}{_tag(fast)}")
    return save_figure(fig, path)


def plot_ratio(rows, path: Path, protocol: str, fast: bool) -> Path:
    """Gradient / evaluation time against r n log2 n, with the theoretical bound 4."""
    fig, ax = new_figure(figsize=(7.5, 4.5))
    for i, name in enumerate(METHODS):
        sel = [r for r in rows if r["method"] == name]
        if sel:
            ax.semilogx([r["r_n_log2n"] for r in sel], [r["grad_over_eval"] for r in sel], MARKERS[i], ls="none",
                        label=name)
    ax.axhline(4, color="k", ls="--", lw=0.8, label="theory: <= ~4")
    _decorate(ax, "r · n · log2 n", "gradient time / evaluation time",
              f"Cost of a gradient in evaluations\n{_wrap(protocol)}{_tag(fast)}", 7)
    return save_figure(fig, path)


def plot_forward(rows, path: Path, protocol: str, fast: bool) -> Path:
    """Seconds / one evaluation against m for jvp, reverse, forward-mode gradient and central differences."""
    series = [("jvp_over_eval", "one jvp (1 direction)"), ("reverse_over_eval", "reverse-mode gradient"),
              ("forward_gradient_over_eval", "forward-mode gradient (vmap over m directions)"),
              ("fd_over_eval", "central differences (2m evaluations, vmapped)")]
    fig, ax = new_figure(figsize=(7.5, 5))
    m = [r["m"] for r in rows]
    for i, (key, label) in enumerate(series):
        ax.loglog(m, [r[key] for r in rows], marker=MARKERS[i], ls=LINES[i], label=label)
    ax.loglog(m, [2 * v for v in m], color="k", lw=0.8, ls=":", label="2m evaluations (claim, unvectorised)")
    _decorate(ax, "number of parameters m", "time / one evaluation",
              f"Forward mode, differences and reverse mode vs m\n{_wrap(protocol)}{_tag(fast)}", 7)
    return save_figure(fig, path)


def plot_fd_error(rows, path: Path, protocol: str, fast: bool) -> Path:
    """Relative error of central differences against the step h, float32 and float64, one line per m."""
    fig, ax = new_figure(figsize=(7.5, 4.5))
    for i, r in enumerate(rows):
        for j, dt in enumerate(("f32", "f64")):
            keys = sorted((float(k.split("_h")[1]), k) for k in r if k.startswith(f"fd_rel_err_{dt}_h"))
            ax.loglog([h for h, _ in keys], [max(r[k], 1e-17) for _, k in keys], marker=MARKERS[i % 8],
                      ls=LINES[j], label=f"m = {r['m']}, {'float32' if dt == 'f32' else 'float64'}")
    _decorate(ax, "step h", "max |FD - reverse| / max |reverse|",
              f"Central differences: error against the reverse-mode gradient\n{_wrap(protocol)}{_tag(fast)}", 6)
    return save_figure(fig, path)


def plot_symbolic(rows, path: Path, protocol: str, fast: bool) -> Path:
    """Left: symbolic gradient tree nodes vs parameters; right: symbolic seconds vs autograd seconds."""
    fig, (a1, a2) = new_figure(ncols=2, figsize=(11, 4.5))
    for i, chars in enumerate(sorted({r["chars"] for r in rows})):
        done = [r for r in rows if r["chars"] == chars and "gradient_tree_nodes" in r]
        if done:
            a1.loglog([r["params"] for r in done], [r["gradient_tree_nodes"] for r in done], marker=MARKERS[i],
                      ls=LINES[i % 4], label=f"{chars} chars: gradient tree nodes")
            a1.loglog([r["params"] for r in done], [r["gradient_dag_nodes"] for r in done], marker=MARKERS[i],
                      ls=":", alpha=0.6, label=f"{chars} chars: distinct subexpressions")
        sym = [r for r in rows if r["chars"] == chars and "symbolic_total_s" in r]
        if sym:
            a2.loglog([r["params"] for r in sym], [r["symbolic_total_s"] for r in sym], marker=MARKERS[i],
                      ls=LINES[i % 4], label=f"{chars} chars: sympy build+print+evaluate")
        auto = [r for r in rows if r["chars"] == chars]
        a2.loglog([r["params"] for r in auto], [r["autograd_grad_s"] for r in auto], marker=MARKERS[i], ls=":",
                  color="gray", label=f"{chars} chars: autograd gradient")
    limit = rows[0]["limit_s"] if rows else math.nan
    a2.axhline(limit, color="k", lw=0.8, ls="--", label=f"time limit {limit:g} s")
    _decorate(a1, "parameters (8 cells² + 6 cells)", "nodes", legend_size=6)
    _decorate(a2, "parameters", "seconds", legend_size=6)
    fig.suptitle(f"Symbolic (sympy) vs reverse-mode gradient of an LSTM char model on 'hello world!'\n"
                 f"{_wrap(protocol)}{_tag(fast)}", fontsize=9)
    return save_figure(fig, path)


def plot_matrix(rows, path: Path, protocol: str, fast: bool) -> Path:
    """Per group: each method's time relative to the group's first method, against n."""
    fig, axes = new_figure(ncols=len(GROUPS), figsize=(15, 4.5))
    for ax, (group, methods) in zip(axes, GROUPS.items()):
        for i, name in enumerate(methods):
            sel = [r for r in rows if r["group"] == group and r["method"] == name]
            ax.loglog([r["n"] for r in sel], [r["over_first"] for r in sel], marker=MARKERS[i], ls=LINES[i % 4],
                      label=name)
        _decorate(ax, "n", f"time / {methods[0]}", group, 6)
    fig.suptitle(f"Matrix-level derivatives vs autodiff, linear StackedACDC\n{_wrap(protocol)}{_tag(fast)}", fontsize=9)
    return save_figure(fig, path)


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_markdown(results: dict) -> str:
    """The Markdown summary: one table per part, the exact command, --fast flagged."""
    out = [f"# acdc autodiff{_tag(results['config']['fast'])}", "", f"Command: `{results['command']}`", ""]
    if "scaling" in results:
        s = results["scaling"]
        out += ["## Gradient cost: StackedACDC vs plain torch.fft + autograd vs dense", "", s["protocol"], "",
                format_table([{k: _g(v) for k, v in f.items()} for f in s["fits"]]), "",
                format_table([{"n": r["n"], "r": r["depth"], "method": r["method"], "eval s": _g(r["eval_s"]),
                               "grad s": _g(r["grad_s"]), "grad/eval": _g(r["grad_over_eval"])}
                              for r in s["rows"]]), ""]
    if "forward" in results:
        f = results["forward"]
        cols = ["n", "m", "jvp_over_eval", "reverse_over_eval", "forward_gradient_over_eval", "fd_over_eval",
                "forward_over_reverse", "forward_gradient_rel_err_f32"]
        errs = sorted(k for k in f["rows"][0] if k.startswith("fd_rel_err")) if f["rows"] else []
        out += ["## Forward mode and finite differences", "", f["protocol"], "",
                format_table([{c: _g(r[c]) for c in cols} for r in f["rows"]]), "",
                format_table([{"m": r["m"], **{k.replace("fd_rel_err_", ""): _g(r[k]) for k in errs}}
                              for r in f["rows"]]), ""]
    if "symbolic" in results:
        y = results["symbolic"]
        cols = ["chars", "cells", "params", "status", "gradient_tree_nodes", "gradient_dag_nodes",
                "gradient built s", "lambdified s", "evaluated s", "symbolic_total_s", "autograd_grad_s",
                "max_rel_diff_vs_autograd"]
        out += ["## Symbolic gradient of the LSTM char model", "", y["protocol"], "",
                format_table([{c: _g(r.get(c)) for c in cols} for r in y["rows"]]), ""]
    if "matrix" in results:
        m = results["matrix"]
        out += ["## Matrix-level derivatives", "", m["protocol"], "",
                format_table([{"n": r["n"], "group": r["group"], "method": r["method"], "seconds": _g(r["seconds"]),
                               "time / first": _g(r["over_first"]), "rel err": _g(r["rel_err"])}
                              for r in m["rows"]]), ""]
    return "\n".join(out)


def write_report(results: dict, folder: Path) -> dict[str, Path]:
    """Every plot of the parts present in ``results`` and summary.md into ``folder``; returns name -> path."""
    fast, folder, figs = results["config"]["fast"], Path(folder), {}
    if "scaling" in results:
        s = results["scaling"]
        figs["scaling_nlogn"] = plot_scaling(s["rows"], s["fits"], "r_n_log2n", folder / "scaling_nlogn.png",
                                             s["protocol"], fast)
        figs["scaling_n2"] = plot_scaling(s["rows"], s["fits"], "r_n2", folder / "scaling_n2.png", s["protocol"], fast)
        figs["grad_over_eval"] = plot_ratio(s["rows"], folder / "grad_over_eval.png", s["protocol"], fast)
    if "forward" in results:
        f = results["forward"]
        figs["forward"] = plot_forward(f["rows"], folder / "forward.png", f["protocol"], fast)
        figs["fd_error"] = plot_fd_error(f["rows"], folder / "fd_error.png", f["protocol"], fast)
    if "symbolic" in results:
        figs["symbolic"] = plot_symbolic(results["symbolic"]["rows"], folder / "symbolic.png",
                                         results["symbolic"]["protocol"], fast)
    if "matrix" in results:
        figs["matrix"] = plot_matrix(results["matrix"]["rows"], folder / "matrix.png", results["matrix"]["protocol"],
                                     fast)
    (folder / "summary.md").write_text(summary_markdown(results))
    return figs
