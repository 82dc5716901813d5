"""Time per LSTM training step vs hidden size: dense nn.LSTM vs ACDCLSTM side by side, and their crossover."""
from __future__ import annotations

import argparse

import torch

from ..experiments import lstm_bench as lib
from ..experiments.common import format_table, make_run_dir, seed_everything, write_json
from .common import positive_float, positive_int

DESCRIPTION = lib.__doc__
FAST_HELP = f"smoke test: {lib.FAST}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=positive_int, nargs="+", default=lib.FULL_SIZES, help="hidden sizes")
    p.add_argument("--steps", type=positive_int, default=16, help="sequence length T")
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--input-size", type=positive_int, default=None, help="input size I (default: = hidden size)")
    p.add_argument("--depth", type=positive_int, default=2, help="ACDC layers per gate transform")
    p.add_argument("--permutation", default="random", choices=["random", "riffle", "none"])
    p.add_argument("--repeats", type=positive_int, default=5, help="timed steps per model and size (at most)")
    p.add_argument("--time-budget", type=positive_float, default=20.0,
                   help="seconds of timed steps per model and size")
    p.add_argument("--max-memory-gb", type=positive_float, default=10.0,
                   help="skip dense above this estimated memory")
    p.add_argument("--max-step-seconds", type=positive_float, default=120.0,
                   help="skip dense when its extrapolated step time exceeds this")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    if args.fast:
        for key, value in lib.FAST.items():
            setattr(args, key, value)
    if args.permutation == "none":
        args.permutation = None
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rows = lib.measure(args)
    cross = lib.crossover(rows)
    out = make_run_dir(args.out, "lstm-bench")
    lib.plot(rows, cross, out / "lstm_scaling.png", args)
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
