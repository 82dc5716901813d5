"""Time per LSTM training step vs hidden size, dense nn.LSTM vs ACDCLSTM side by side, and their crossover.

One training step = zero grads, forward over a (T, B, I) sequence, backward of the mean squared output, SGD
update. Both models are timed at every size in the same process, interleaved (medians after one warm-up step).
The dense LSTM is skipped (and the reason recorded) once its estimated memory exceeds ``--max-memory-gb`` or
its time per step, extrapolated from the previous size as ~H^2, exceeds ``--max-step-seconds``. The crossover
is the hidden size where the time ratio dense / ACDC passes 1, interpolated log-log between measured sizes.
The ``acdc lstm-bench`` command (torch_acdc.cli.lstm_bench) writes results.json and lstm_scaling.png.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..bench import median_ms
from ..recurrent import ACDCLSTM, acdc_lstm_parameter_count
from .common import new_figure, save_figure, set_title
from ..progress import progress_bar

FULL_SIZES = [256, 512, 1024, 2048, 4096, 8192, 16384]
FAST = {"sizes": [16, 32], "steps": 3, "batch": 2, "repeats": 1}


def dense_lstm_parameter_count(input_size: int, hidden_size: int) -> int:
    return 4 * hidden_size * (input_size + hidden_size) + 8 * hidden_size


def estimated_memory_gb(params: int, steps: int, batch: int, hidden: int) -> float:
    """fp32 weights + gradients, plus ~12 saved (B, H) activations per step (gates, cell, hidden, grads)."""
    return 4 * (2 * params + 12 * steps * batch * hidden) / 1e9


def build(kind: str, input_size: int, hidden: int, depth: int, permutation) -> nn.Module:
    if kind == "dense":
        return nn.LSTM(input_size, hidden)
    return ACDCLSTM(input_size, hidden, depth=depth, permutation=permutation)


def training_step(model: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer):
    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.square().mean().backward()
        opt.step()
    return step


def time_step(kind: str, hidden: int, args) -> float:
    """Median milliseconds of one training step; as few repeats as fit in ``--time-budget`` seconds."""
    input_size = args.input_size or hidden
    model = build(kind, input_size, hidden, args.depth, args.permutation)
    x = torch.randn(args.steps, args.batch, input_size)
    step = training_step(model, x, torch.optim.SGD(model.parameters(), lr=1e-3))
    start = time.perf_counter()
    step()  # warm-up (allocations, DCT tables)
    first = time.perf_counter() - start
    repeats = max(1, min(args.repeats, int(args.time_budget / max(first, 1e-6))))
    return median_ms(step, repeats=repeats, warmup=0)


def crossover(rows: list[dict]) -> float | None:
    """Hidden size where dense_ms / acdc_ms crosses 1 upwards (log-log interpolation), else None."""
    pts = [(r["hidden"], r["dense_ms"] / r["acdc_ms"]) for r in rows if r.get("dense_ms") and r.get("acdc_ms")]
    for (h0, r0), (h1, r1) in zip(pts, pts[1:]):
        if r0 < 1 <= r1:
            frac = -math.log(r0) / (math.log(r1) - math.log(r0))
            return math.exp(math.log(h0) + frac * (math.log(h1) - math.log(h0)))
    return None


def verdict(rows: list[dict], cross: float | None) -> str:
    speedups = [r["speedup"] for r in rows if "speedup" in r]
    if cross:
        return f"crossover: ACDCLSTM is faster than nn.LSTM from H ~ {cross:.0f}"
    if not speedups:
        return "no size where both models were measured"
    if all(s > 1 for s in speedups):
        return "no crossover in range: ACDCLSTM faster at every size where both were measured"
    if all(s <= 1 for s in speedups):
        return "no crossover in range: nn.LSTM faster at every size where both were measured"
    return "no upward crossover: the ratio is not monotone, see the table"


def measure(args) -> list[dict]:
    rows = []
    skip_dense = None
    jobs = [(h, k) for h in args.sizes for k in ("dense", "acdc")]
    bar = progress_bar(jobs, desc="lstm-bench", enabled=not args.no_progress)
    for hidden, kind in bar:
        bar.set_postfix(hidden=hidden, model=kind, refresh=True)
        input_size = args.input_size or hidden
        if kind == "dense":
            params = dense_lstm_parameter_count(input_size, hidden)
            row = {"hidden": hidden, "input_size": input_size, "dense_params": params,
                   "acdc_params": acdc_lstm_parameter_count(input_size, hidden, depth=args.depth)}
            rows.append(row)
            gb = estimated_memory_gb(params, args.steps, args.batch, hidden)
            prev = rows[-2]["dense_ms"] if len(rows) > 1 and rows[-2].get("dense_ms") else None
            guess_s = prev / 1e3 * (hidden / rows[-2]["hidden"]) ** 2 if prev else 0.0
            if skip_dense is None and gb > args.max_memory_gb:
                skip_dense = f"dense skipped from H={hidden}: ~{gb:.1f} GB > --max-memory-gb {args.max_memory_gb}"
            elif skip_dense is None and guess_s > args.max_step_seconds:
                skip_dense = (f"dense skipped from H={hidden}: ~{guess_s:.0f} s per step (extrapolated H^2) > "
                              f"--max-step-seconds {args.max_step_seconds}")
            if skip_dense:
                row["note"] = skip_dense
                continue
        rows[-1][f"{kind}_ms"] = time_step(kind, hidden, args)
        if kind == "acdc" and rows[-1].get("dense_ms"):
            rows[-1]["speedup"] = rows[-1]["dense_ms"] / rows[-1]["acdc_ms"]
    return rows


def plot(rows: list[dict], cross: float | None, path, args, title: str | None = None) -> None:
    """Time per training step and parameter count against hidden size, dense vs ACDC."""
    fig, (ax_t, ax_p) = new_figure(ncols=2, figsize=(11, 4.6))
    set_title(fig, title)
    for kind, style in (("dense", "o-"), ("acdc", "s-")):
        pts = [(r["hidden"], r[f"{kind}_ms"]) for r in rows if r.get(f"{kind}_ms")]
        label = "nn.LSTM (dense)" if kind == "dense" else f"ACDCLSTM (depth {args.depth})"
        if pts:
            ax_t.plot(*zip(*pts), style, label=label)
        ax_p.plot([r["hidden"] for r in rows], [r[f"{kind}_params"] for r in rows], style, label=label)
    if cross:
        ax_t.axvline(cross, color="gray", ls="--", label=f"crossover H ~ {cross:.0f}")
    ax_t.set(xscale="log", yscale="log", xlabel="hidden size H", ylabel="ms per training step",
             title=f"T={args.steps}, B={args.batch}, {torch.get_num_threads()} threads")
    ax_p.set(xscale="log", yscale="log", xlabel="hidden size H", ylabel="parameters", title="parameters")
    for ax in (ax_t, ax_p):
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path)
