"""Benchmark nn.Linear vs ACDC vs StackedACDC (and the rfft floor): time, ratios, peak memory, batch sweep.

Prints a Markdown table from one run (all figures of a row measured in the same process) and writes
results.json into the run folder. ``--quick`` runs two small sizes for a smoke test.
"""
from __future__ import annotations

import argparse

import torch

from . import bench
from .experiments.common import make_run_dir, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--depth", type=int, default=4, help="depth of the StackedACDC column")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true", help="sizes 256 and 1024, 5 repeats")
    p.add_argument("--batch-sweep", action="store_true",
                   help="also sweep batch sizes 1..4096 at n=1024 and 4096 (Linear vs ACDC)")
    p.add_argument("--out", default=None, help="run folder (default runs/bench-<time>)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes, repeats = ((256, 1024), 5) if args.quick else (args.sizes, args.repeats)
    rows = bench.run(sizes, args.batch, args.depth, repeats, args.device, memory=not args.no_memory)
    table = bench.format_table(rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, fp32, "
          f"median ms; peak MiB allocated during one forward+backward")
    print(table)
    result = {"rows": [r.as_dict() for r in rows], "threads": torch.get_num_threads(),
              "torch": torch.__version__, "device": args.device}
    if args.batch_sweep:
        sweep = bench.batch_sweep(device=args.device, repeats=max(3, repeats // 2))
        print("\nBatch-size sweep (median ms; speedup = Linear / ACDC):")
        print(bench.format_sweep(sweep))
        result["batch_sweep"] = sweep
    out = make_run_dir(args.out, "bench", overwrite=getattr(args, "overwrite", False))
    write_json(out / "results.json", result)
    print(f"results: {out / 'results.json'}")
    return 0
