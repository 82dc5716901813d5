"""``acdc autodiff``: settings (full and --fast), the four measurements, results.json, plots, summary.md."""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import torch

from ..common import make_run_dir, write_json
from . import report
from .forward import measure_forward
from .matrix import measure_matrix
from .scaling import measure_scaling, scaling_fits
from .symbolic import measure_symbolic

__all__ = ["PARTS", "FULL", "FAST", "resolve_settings", "run_autodiff"]

PARTS = ("scaling", "forward", "symbolic", "matrix")
FULL = {"scaling_ns": [2**k for k in range(8, 15)], "scaling_depths": [1, 2, 4, 8, 16], "batch": 32,
        "dense_limit": 2**26, "forward_ns": [16, 32, 64, 128, 256, 512], "forward_depth": 2, "chunk": 256,
        "cells": list(range(1, 10)), "chars": [2, 3, 4, 12], "symbolic_limit": 30.0,
        "matrix_ns": [64, 128, 256, 512, 1024], "matrix_depth": 4, "rounds": 5, "min_sample": 0.01,
        "fit_min_n": 2**11}
FAST = {**FULL, "scaling_ns": [2**6, 2**8], "scaling_depths": [1, 2], "batch": 8, "forward_ns": [8, 16],
        "chunk": 64, "cells": [1, 2], "chars": [2], "symbolic_limit": 10.0, "matrix_ns": [16, 32], "rounds": 2,
        "min_sample": 0.002, "fit_min_n": 1}


def resolve_settings(explicit: dict, fast: bool) -> dict:
    """The run's settings: explicit values (not None) win over the --fast / full defaults."""
    unknown = sorted(set(explicit) - set(FULL))
    if unknown:
        raise ValueError(f"unknown autodiff settings {unknown}: expected some of {sorted(FULL)}")
    base = FAST if fast else FULL
    return {k: explicit[k] if explicit.get(k) is not None else v for k, v in base.items()}


def _command_line() -> str:
    """The ``acdc ...`` command of this process, when it is one (else a note that it ran in-process)."""
    if Path(sys.argv[0]).name in ("acdc", "cli.py", "__main__.py") and "autodiff" in sys.argv:
        return "acdc " + shlex.join(sys.argv[sys.argv.index("autodiff"):])
    return "acdc autodiff (called in-process)"


def _protocol(s: dict, what: str) -> str:
    return f"{what}; CPU, {torch.get_num_threads()} thread(s), median of {s['rounds']} interleaved rounds"


def run_autodiff(s: dict, parts=PARTS, *, out=None, fast: bool = False, seed: int = 0, progress: bool = True,
                 command: str | None = None, overwrite: bool = False) -> dict:
    """Run ``parts`` with settings ``s`` (see :data:`FULL`); write results.json, PNGs and summary.md into the
    run folder; return the results dict (with "out")."""
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise ValueError(f"unknown parts {bad}: expected some of {list(PARTS)}")
    folder = make_run_dir(out, "autodiff", overwrite=overwrite)
    results = {"experiment": "autodiff", "config": {**s, "parts": list(parts), "fast": fast, "seed": seed,
                                                    "threads": torch.get_num_threads()},
               "command": command or _command_line()}
    started = time.perf_counter()
    common = {"rounds": s["rounds"], "min_sample": s["min_sample"], "seed": seed, "progress": progress}
    if "scaling" in parts:
        rows = measure_scaling(s["scaling_ns"], s["scaling_depths"], batch=s["batch"], dense_limit=s["dense_limit"],
                               **common)
        fits = scaling_fits(rows, s["fit_min_n"])
        proto = _protocol(s, f"loss mean(y^2), batch {s['batch']} x n, float32, fits over n >= {s['fit_min_n']}")
        results["scaling"] = {"protocol": proto, "rows": rows, "fits": fits, "fits_all_n": scaling_fits(rows)}
    if "forward" in parts:
        rows = measure_forward(s["forward_ns"], depth=s["forward_depth"], chunk=s["chunk"], **common)
        proto = _protocol(s, f"StackedACDC(n, n, {s['forward_depth']}, tanh), loss mean(y^2), batch 16, float32 "
                             f"timings, vmap chunk {s['chunk']}, errors vs float64 reverse mode")
        results["forward"] = {"protocol": proto, "rows": rows}
    if "symbolic" in parts:
        rows = measure_symbolic(s["cells"], s["chars"], limit=s["symbolic_limit"], rounds=s["rounds"], seed=seed,
                                progress=progress)
        proto = (f"sympy diff + lambdify (math) under a {s['symbolic_limit']:g} s limit per size, float64 autograd "
                 f"median of {s['rounds']} rounds")
        results["symbolic"] = {"protocol": proto, "rows": rows}
    if "matrix" in parts:
        rows = measure_matrix(s["matrix_ns"], depth=s["matrix_depth"], **common)
        proto = _protocol(s, f"linear StackedACDC(n, n, {s['matrix_depth']}), float64, loss ||W x + b - y||^2")
        results["matrix"] = {"protocol": proto, "rows": rows}
    results["wall_seconds"] = time.perf_counter() - started
    results["figures"] = report.write_report(results, folder)
    write_json(folder / "results.json", results)
    results["out"] = folder
    return results
