"""Benchmark nn.Linear vs ACDC vs StackedACDC (and the rfft floor): time, ratios, peak memory, batch sweep.

Prints a Markdown table from one run (all figures of a row measured in the same process) and writes
results.json into the run folder. ``--quick`` (or ``--fast``) runs two small sizes for a smoke test.
"""
from __future__ import annotations

import argparse

import torch

from .. import bench
from ..experiments.common import make_run_dir, seed_everything, write_json
from .common import positive_int

FAST_HELP = "same as --quick: sizes 256 and 1024, 5 repeats"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--depth", type=positive_int, default=4, help="depth of the StackedACDC column")
    p.add_argument("--repeats", type=positive_int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true", help="sizes 256 and 1024, 5 repeats")
    p.add_argument("--batch-sweep", action="store_true",
                   help="also sweep batch sizes 1..4096 at n=1024 and 4096 (Linear vs ACDC)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    quick = args.quick or args.fast
    sizes, repeats = ((256, 1024), 5) if quick else (args.sizes, args.repeats)
    rows = bench.run(sizes, args.batch, args.depth, repeats, args.device, memory=not args.no_memory,
                     progress=not args.no_progress)
    table = bench.format_table(rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, fp32, "
          f"median ms; peak MiB allocated during one forward+backward")
    print(table)
    result = {"rows": [r.as_dict() for r in rows], "threads": torch.get_num_threads(),
              "torch": torch.__version__, "device": args.device}
    if args.batch_sweep:
        sweep = bench.batch_sweep(device=args.device, repeats=max(3, repeats // 2), progress=not args.no_progress)
        print("\nBatch-size sweep (median ms; speedup = Linear / ACDC):")
        print(bench.format_sweep(sweep))
        result["batch_sweep"] = sweep
    out = make_run_dir(args.out, "bench")
    write_json(out / "results.json", result)
    print(f"results: {out / 'results.json'}")
    return 0
