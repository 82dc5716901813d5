"""The command-line side of the comparison protocol (:mod:`torch_acdc.experiments.protocol`), one for every
command that compares families: the job flags and the driver (timing pass, jobs, merge)."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ..experiments import protocol
from .common import UsageError, nonnegative_int

__all__ = ["add_job_flags", "run_comparison"]


def add_job_flags(g) -> None:
    """``--list-jobs``, ``--plan-only``, ``--job K``, ``--merge`` on the argument group ``g``."""
    g.add_argument("--list-jobs", action="store_true", help="print one command per job of the grid and exit")
    g.add_argument("--plan-only", action="store_true", help="only the timing pass (plan.json), which every job reads")
    g.add_argument("--job", type=nonnegative_int, nargs="+", default=None,
                   help="run only job(s) K (needs the plan: --plan-only); jobs may run concurrently in one --out")
    g.add_argument("--merge", action="store_true", help="only merge the finished jobs into the table")


def run_comparison(args: argparse.Namespace, exp: protocol.Experiment, grid: protocol.Grid,
                   command: str) -> dict | None:
    """Timing pass, the grid's jobs (all, or ``--job K``) and the merge into ``--out``; ``--list-jobs`` prints
    the commands instead. Returns the merged record (None when only listing, planning or running one job)."""
    folder = command.replace(" --", "-")  # "charlm --sweep" -> runs/charlm-sweep-<time>
    out = Path(args.out) if args.out else Path("runs") / f"{folder}-{time.strftime('%Y%m%d-%H%M%S')}"
    jobs = protocol.jobs(grid)
    if args.list_jobs:
        argv = list(getattr(args, "_argv", sys.argv[1:]))
        drop = {i for i, a in enumerate(argv) if a == "--list-jobs"}
        drop |= {j for i, a in enumerate(argv) if a == "--out" for j in (i, i + 1)}
        drop |= {i for i, a in enumerate(argv) if a.startswith("--out=")}
        base = " ".join(shlex.quote(a) for i, a in enumerate(argv) if i not in drop)
        base = f"acdc {base} --out {shlex.quote(str(out))}"
        print(f"{base} --plan-only    # first, once: the timing pass every job reads")
        for k, (family, lr, seed) in enumerate(jobs):
            print(f"{base} --job {k}    # {protocol.job_name(family, lr, seed)}")
        print(f"{base} --merge")
        return None
    if args.job is not None and not args.merge:
        if not (out / "plan.json").is_file():
            raise UsageError(f"--job needs the timing pass first (the same command with --plan-only): "
                             f"{out / 'plan.json'} does not exist")
        protocol.claim_dir(out, exp, grid, job=True)  # checks the manifest; locks only each job's folder
    else:
        protocol.claim_dir(out, exp, grid, args.overwrite)  # the same comparison continues; another is refused
    if not args.merge:
        plan = protocol.make_plan(out, exp, grid)
        costs = {f: round(v, 2) for f, v in plan["step_ms"].items()}
        print(f"step costs (ms, interleaved): {costs}; steps per budget: {plan['steps']}")
        if plan.get("contention"):
            print(f"warning: {plan['contention']}", file=sys.stderr)
        if args.plan_only:
            return None
        for k in (args.job if args.job is not None else range(len(jobs))):
            protocol.run_job(out, exp, grid, plan, k, progress=not args.no_progress)
            if args.job is not None:
                print(f"job {k} done: {out / 'jobs' / protocol.job_name(*jobs[k])}")
        if args.job is not None:
            return None
    record = protocol.merge(out, exp, grid, fast=bool(getattr(args, "fast", False)))
    print(record["summary"])
    print(f"results: {out / 'results.json'}; figures: {', '.join(str(out / f) for f in record['figures'])}")
    return record
