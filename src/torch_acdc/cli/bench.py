"""Benchmark nn.Linear vs ACDC vs StackedACDC (and the rfft floor): time, ratios, peak memory, batch sweep.

Prints a Markdown table from one run (all figures of a row measured in the same process) and writes
results.json into the run folder. ``--quick`` (or ``--fast``) runs two small sizes for a smoke test.
"""
from __future__ import annotations

import argparse
import inspect
import time

import torch

from .. import bench
from ..experiments.common import make_run_dir, seed_everything, write_json
from ..layers import ACDC
from .common import positive_int

FULL = {"sizes": [512, 1024, 2048, 4096, 8192, 16384], "repeats": 20}
FAST = {"sizes": [256, 1024], "repeats": 5}
FAST_HELP = "smoke test, same as --quick (explicit flags win)"


THREADS, DEVICE, TIMES = None, "cpu", True  # --threads / --device (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=positive_int, nargs="+", default=None)
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--depth", type=positive_int, default=4, help="depth of the StackedACDC column")
    p.add_argument("--repeats", type=positive_int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true", dest="fast", help="the same as --fast")
    p.add_argument("--batch-sweep", action="store_true",
                   help="also sweep batch sizes 1..4096 at n=1024 and 4096 (Linear vs ACDC)")
    p.add_argument("--latency-sizes", type=positive_int, nargs="+", default=[64, 1024, 4096],
                   help="n of the batch-1 forward (no grad) rows")
    p.add_argument("--no-lstm", action="store_true", help="skip the LSTM training and generation step timings")


def _sweep_defaults() -> tuple[tuple, tuple]:
    params = inspect.signature(bench.batch_sweep).parameters
    return tuple(params["sizes"].default), tuple(params["batches"].default)


def estimate_sweep_seconds(repeats: int, device: str) -> float:
    """Rough duration of :func:`torch_acdc.bench.batch_sweep`: one probe call of each timed function at the
    largest batch per size, scaled to all batch sizes (time ~ batch) and to warm-up + ``repeats`` calls."""
    sizes, batches = _sweep_defaults()
    total = 0.0
    for n in sizes:
        x = torch.randn(max(batches), n, device=device, requires_grad=True)
        lin, acdc = torch.nn.Linear(n, n, device=device), ACDC(n, device=device)
        start = time.perf_counter()
        for module in (lin, acdc):
            module(x).sum().backward()  # ~ forward + f+b of the sweep's four timed functions
        total += (time.perf_counter() - start) * 1.5 * sum(batches) / max(batches)
    return total * (3 + repeats)


def run(args: argparse.Namespace) -> int:
    out = make_run_dir(args.out, "bench", overwrite=args.overwrite)  # refused before any timing, not after
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    seed_everything(args.seed)
    sizes, repeats = args.sizes, args.repeats
    sweep_repeats = max(3, repeats // 2)
    if args.batch_sweep:
        seconds = estimate_sweep_seconds(sweep_repeats, args.device)
        print(f"--batch-sweep: about {max(1, round(seconds / 60))} min more after the main table "
              f"({len(_sweep_defaults()[0]) * len(_sweep_defaults()[1])} configurations, estimated from one probe "
              f"call per size)", flush=True)
    rows = bench.run(sizes, args.batch, args.depth, repeats, args.device, memory=not args.no_memory,
                     progress=not args.no_progress)
    table = bench.format_table(rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, fp32, "
          f"median ms; peak MiB allocated during one forward+backward")
    print(table)
    info = bench.machine()
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, torch {info['torch']}; "
          f"native kernels {info['native']}; FFT plans kept: {info['fft_plans']}")
    small = bench.small_calls(args.latency_sizes, repeats=60 if args.fast else 300, device=args.device)
    print("\nB=1 forward, no grad (median us, interleaved; path = dispatch route/kernel of the ACDC call):")
    print(bench.format_small_calls(small))
    result = {"rows": [r.as_dict() for r in rows], "threads": torch.get_num_threads(), "small_calls": small,
              "machine": info, "torch": torch.__version__, "device": args.device}
    if not args.no_lstm and args.device == "cpu":
        lstm = bench.lstm_steps(repeats=3 if args.fast else 7, gen_repeats=40 if args.fast else 200)
        print("\nrecurrent (interleaved medians):")
        print(bench.format_lstm(lstm))
        result["lstm"] = lstm
    print(bench.LEGEND)
    if args.batch_sweep:
        sweep = bench.batch_sweep(device=args.device, repeats=sweep_repeats, progress=not args.no_progress)
        print("\nBatch-size sweep (median ms; speedup = Linear / ACDC):")
        print(bench.format_sweep(sweep))
        result["batch_sweep"] = sweep
    write_json(out / "results.json", result)
    print(f"results: {out / 'results.json'}")
    return 0
