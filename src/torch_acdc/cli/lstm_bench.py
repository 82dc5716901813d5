"""Time per LSTM training step vs hidden size: dense nn.LSTM vs ACDCLSTM side by side, and their crossover."""
from __future__ import annotations

import argparse

import torch

from ..experiments import lstm_bench as lib
from ..experiments.common import format_table, make_run_dir, run_title, seed_everything, write_json
from .common import positive_float, positive_int

DESCRIPTION = lib.__doc__
FULL = {"sizes": lib.FULL_SIZES, "steps": 16, "batch": 32, "repeats": 5}
FAST = lib.FAST
FAST_HELP = "smoke test (explicit flags win)"


THREADS, TIMES = None, True  # --threads (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=positive_int, nargs="+", default=None, help="hidden sizes")
    p.add_argument("--steps", type=positive_int, default=None, help="sequence length T")
    p.add_argument("--batch", type=positive_int, default=None)
    p.add_argument("--input-size", type=positive_int, default=None, help="input size I (default: = hidden size)")
    p.add_argument("--depth", type=positive_int, default=2, help="ACDC layers per gate transform")
    p.add_argument("--permutation", default="random", choices=["random", "riffle", "none"])
    p.add_argument("--repeats", type=positive_int, default=None, help="timed steps per model and size (at most)")
    p.add_argument("--time-budget", type=positive_float, default=20.0,
                   help="seconds of timed steps per model and size")
    p.add_argument("--max-memory-gb", type=positive_float, default=10.0,
                   help="skip dense above this estimated memory")
    p.add_argument("--max-step-seconds", type=positive_float, default=120.0,
                   help="skip dense when its extrapolated step time exceeds this")


def run(args: argparse.Namespace) -> int:
    if args.permutation == "none":
        args.permutation = None
    seed_everything(args.seed)
    rows = lib.measure(args)
    cross = lib.crossover(rows)
    out = make_run_dir(args.out, "lstm-bench", overwrite=args.overwrite)
    title = run_title("nn.LSTM vs ACDCLSTM training step", data=f"random sequences, T={args.steps}, B={args.batch}",
                      protocol="median ms per SGD step", seeds=args.seed, fast=args.fast)
    lib.plot(rows, cross, out / "lstm_scaling.png", args, title)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    summary = lib.verdict(rows, cross)
    write_json(out / "results.json", {"config": config, "rows": rows, "crossover_hidden": cross,
                                      "verdict": summary, "threads": torch.get_num_threads(),
                                      "torch": torch.__version__})
    columns = ["hidden", "input_size", "dense_ms", "acdc_ms", "speedup", "dense_params", "acdc_params", "note"]
    print(f"time per training step (ms, median), T={args.steps}, B={args.batch}, depth={args.depth}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(format_table(rows, columns, floatfmt=".1f"))
    print(summary)
    print(f"results: {out / 'results.json'}, plot: {out / 'lstm_scaling.png'}")
    return 0
