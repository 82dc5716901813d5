"""Shared plumbing for experiments: seeding, run folders, JSON results, headless PNG plots, tables."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write
from ..markdown import format_table  # noqa: F401 (re-exported for the experiments)
from ..training.runs import check_fresh_start, lock_dir

__all__ = ["seed_everything", "make_run_dir", "write_json", "save_figure", "format_table", "new_figure", "run_title",
           "line_style", "set_title", "integer_axis"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_run_dir(out: str | os.PathLike | None, name: str, resume: bool = False, overwrite: bool = False,
                 can_resume: bool = False) -> Path:
    """``out`` if given, else ``runs/<name>-<timestamp>``; created if missing, and locked for this process.

    Raises :class:`~torch_acdc.training.RunFolderError` if a fresh run (``resume`` False) would start over
    the run already in ``out`` without ``overwrite`` (its advice offers ``--resume`` only when the command has
    it: ``can_resume``), and :class:`~torch_acdc.training.RunLockError` (naming the holder) if another
    process writes there.
    """
    path = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_fresh_start(path, resume, overwrite, can_resume or resume)
    lock_dir(path)
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` (tensors/numpy converted) as indented JSON, atomically
    (:func:`torch_acdc.files.atomic_write`: the umask's permissions, errors naming the file)."""
    return atomic_write(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True).encode())


def new_figure(**kwargs):
    """A matplotlib (fig, ax) on the headless Agg backend, laid out by matplotlib's constrained layout (titles,
    labels and outside legends all get room: nothing is clipped at the saved size)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kwargs.setdefault("layout", "constrained")
    return plt.subplots(**kwargs)


_KEEP_TOGETHER = ("--fast smoke run", "full run")  # phrases a wrapped title never splits


def _wrap(text: str, chars: int) -> str:
    import textwrap

    for i, phrase in enumerate(_KEEP_TOGETHER):
        text = text.replace(phrase, f"\x00{i}\x00")
    wrapped = "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.splitlines())
    for i, phrase in enumerate(_KEEP_TOGETHER):
        wrapped = wrapped.replace(f"\x00{i}\x00", phrase)
    return wrapped


def _wrap_titles(fig) -> None:
    """Wrap the figure title and every axes title to the width they have (long protocol titles were clipped)."""
    width_in = fig.get_figwidth()
    if fig._suptitle is not None:
        text = fig._suptitle.get_text()
        chars = max(40, int(width_in * 72 / (0.6 * fig._suptitle.get_fontsize())))
        fig._suptitle.set_text(_wrap(text, chars))
    for ax in fig.axes:
        title = ax.get_title()
        if title:
            box = ax.get_position()
            chars = max(24, int(box.width * width_in * 72 / (0.6 * ax.title.get_fontsize())))
            ax.set_title(_wrap(title, chars), fontsize=ax.title.get_fontsize())


def _legends_off_the_data(fig) -> None:
    """Move every axes legend with more than 3 entries outside its axes (below it), where it cannot hide data;
    short legends stay where matplotlib's "best" finds the emptiest corner."""
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        handles, labels = ax.get_legend_handles_labels()
        size = legend.get_texts()[0].get_fontsize() if legend.get_texts() else 7
        if len(labels) > 3:
            legend.remove()
            ax.legend(handles, labels, fontsize=size, loc="upper center", bbox_to_anchor=(0.5, -0.18),
                      ncol=min(3, len(labels)), frameon=False)
        else:
            legend.remove()
            ax.legend(handles, labels, fontsize=size, loc="best", framealpha=0.8)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a figure as PNG and close it: titles wrapped, long legends moved off the data, the whole drawing
    kept (``bbox_inches="tight"``)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    _wrap_titles(fig)
    _legends_off_the_data(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run_title(what: str, *, data: str, protocol: str, seeds, fast: bool) -> str:
    """A figure title naming what is plotted, the data, the protocol, the seeds and whether it is a --fast run.

    ``seeds``: an int, a range or a list of seeds."""
    seeds = list(seeds) if isinstance(seeds, (range, list, tuple)) else [seeds]
    if len(seeds) == 1:
        seed_text = f"seed {seeds[0]}"
    elif seeds == list(range(seeds[0], seeds[-1] + 1)):
        seed_text = f"seeds {seeds[0]}-{seeds[-1]}"
    else:
        seed_text = "seeds " + ", ".join(map(str, seeds))
    run = "--fast smoke run" if fast else "full run"
    return f"{what}\ndata: {data}; protocol: {protocol}; {seed_text}; {run}"


MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*", "P", "h")
LINESTYLES = ("-", "--", "-.", ":")


def line_style(i: int, points: int | None = None) -> dict:
    """Matplotlib line keywords for the ``i``-th curve: its own colour, marker and linestyle, so curves that
    coincide stay distinguishable; ``points`` (the curve length) spreads about 10 markers along long curves."""
    style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[i % len(LINESTYLES)],
             "ms": 4}
    if points and points > 12:
        style["markevery"] = max(1, points // 10)
    return style


def set_title(fig, title: str | None) -> None:
    """The figure's overall title (nothing if None)."""
    if title:
        fig.suptitle(title, fontsize=9)


def integer_axis(ax, axis: str = "x") -> None:
    """Integer tick labels only (epochs, steps)."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))
