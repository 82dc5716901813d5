"""Part 1: what a gradient costs as width n and depth r grow - StackedACDC (analytic backward), the same stack
in plain torch.fft ops under autograd, and a dense nn.Linear stack.

Claims tested: reverse mode gives the gradient for a small constant times one evaluation (<= ~4x in theory,
10-30x for AD tools in practice), and through r ACDC layers it costs O(r n log n) against O(r n^2) dense.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...layers import StackedACDC
from .models import PlainACDCStack, dense_stack
from .timing import interleaved_medians
from ...progress import progress_bar

__all__ = ["METHODS", "measure_scaling", "fit_loglog", "scaling_fits"]

METHODS = ("StackedACDC (analytic backward)", "plain torch.fft + autograd", "dense nn.Linear")


def _grad_fn(model, x):
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        loss = model(x).square().mean()
        return torch.autograd.grad(loss, params)

    return step


def _eval_fn(model, x):
    def step():
        with torch.no_grad():
            return model(x)

    return step


def _max_rel(a, b) -> float:
    return max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item() for u, v in zip(a, b))


def measure_scaling(ns, depths, *, batch: int = 32, dense_limit: int = 2**26, rounds: int = 5,
                    min_sample: float = 0.01, seed: int = 0, progress: bool = True) -> list[dict]:
    """One row per (n, depth, method): median eval / gradient seconds (interleaved) and their ratio.

    A loss mean(y^2) over a (batch, n) float32 input; the gradient is with respect to every parameter.
    Dense stacks with depth * n^2 > ``dense_limit`` weights are skipped (memory). The plain stack's gradient is
    compared with the analytic one (``grad_rel_diff``). Cost: dominated by the largest dense stacks.
    """
    rows = []
    jobs = [(n, r) for n in ns for r in depths]
    for n, r in progress_bar(jobs, desc="autodiff: gradient scaling", enabled=progress):
        torch.manual_seed(seed)
        x = torch.randn(batch, n)
        stack = StackedACDC(n, n, r)
        models = {METHODS[0]: stack, METHODS[1]: PlainACDCStack(stack)}
        if r * n * n <= dense_limit:
            models[METHODS[2]] = dense_stack(n, r)
        fns = {}
        for name, model in models.items():
            fns[(name, "eval")] = _eval_fn(model, x)
            fns[(name, "grad")] = _grad_fn(model, x)
        diff = _max_rel(fns[(METHODS[1], "grad")](), fns[(METHODS[0], "grad")]())
        times = interleaved_medians(fns, rounds=rounds, min_sample=min_sample)
        for name in models:
            ev, gr = times[(name, "eval")], times[(name, "grad")]
            rows.append({"n": n, "depth": r, "method": name, "eval_s": ev, "grad_s": gr, "grad_over_eval": gr / ev,
                         "r_n_log2n": r * n * math.log2(n), "r_n2": r * n * n, "batch": batch,
                         "grad_rel_diff": diff if name == METHODS[1] else 0.0 if name == METHODS[0] else None})
        del models, fns
    return rows


def fit_loglog(x, y) -> float:
    """Slope of log y against log x (least squares); nan for fewer than 2 distinct x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(set(x.tolist())) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def scaling_fits(rows: list[dict], min_n: int = 1) -> list[dict]:
    """Per method: fitted slopes of gradient time against r n log n and against r n^2 (rows with n >= min_n),
    and the median gradient / evaluation ratio."""
    out = []
    for name in METHODS:
        sel = [r for r in rows if r["method"] == name and r["n"] >= min_n]
        if not sel:
            continue
        t = [r["grad_s"] for r in sel]
        out.append({"method": name, "points": len(sel), "min_n": min_n,
                    "slope_vs_r_n_log_n": fit_loglog([r["r_n_log2n"] for r in sel], t),
                    "slope_vs_r_n2": fit_loglog([r["r_n2"] for r in sel], t),
                    "median_grad_over_eval": float(np.median([r["grad_over_eval"] for r in sel])),
                    "max_grad_over_eval": float(max(r["grad_over_eval"] for r in sel))})
    return out
