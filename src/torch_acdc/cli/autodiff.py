"""What a derivative costs on our layers: reverse vs forward mode, finite differences, symbolic, matrix level.

Four parts (``--parts``, default all), each against the claim it tests (docs/autodiff.md):
scaling (gradient time of StackedACDC / the plain torch.fft stack under autograd / dense nn.Linear over n and
depth, fitted log-log slopes), forward (jvp per direction, forward-mode and finite-difference gradients vs
reverse as m grows, difference errors), symbolic (sympy gradient of a tiny LSTM char model under a time
limit), matrix (closed-form Jacobian / Hessian vs torch.func, HVPs). Writes results.json, PNG plots and
summary.md into the run folder. Timings are interleaved medians; ``--threads`` (default 1) limits torch.
"""
from __future__ import annotations

import argparse

import torch

from ..experiments.autodiff import FAST, FULL, PARTS, resolve_settings, run_autodiff
from .common import positive_float, positive_int

__all__ = ["add_arguments", "run", "FAST_HELP"]

FAST_HELP = "small sizes for CI (seconds); explicit flags still win"

# flag -> (settings key, type, nargs)
_OVERRIDES = {
    "--scaling-ns": ("scaling_ns", positive_int, "+"), "--scaling-depths": ("scaling_depths", positive_int, "+"),
    "--batch": ("batch", positive_int, None), "--dense-limit": ("dense_limit", positive_int, None),
    "--forward-ns": ("forward_ns", positive_int, "+"), "--chunk": ("chunk", positive_int, None),
    "--cells": ("cells", positive_int, "+"), "--chars": ("chars", positive_int, "+"),
    "--symbolic-limit": ("symbolic_limit", positive_float, None), "--matrix-ns": ("matrix_ns", positive_int, "+"),
    "--rounds": ("rounds", positive_int, None), "--min-sample": ("min_sample", positive_float, None),
}


THREADS, TIMES = 1, True  # --threads (cli.common; default 1: timings of one thread), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    for flag, (key, typ, nargs) in _OVERRIDES.items():
        p.add_argument(flag, dest=key, type=typ, nargs=nargs, default=None,
                       help=f"default {FULL[key]} (--fast: {FAST[key]})")


def run(args: argparse.Namespace) -> int:
    settings = resolve_settings({key: getattr(args, key) for key, _, _ in _OVERRIDES.values()}, args.fast)
    if not 2 <= min(settings["chars"]) <= max(settings["chars"]) <= 12:
        raise SystemExit(f"acdc autodiff: --chars must be in [2, 12], got {settings['chars']}")
    res = run_autodiff(settings, args.parts, out=args.out, fast=args.fast, seed=args.seed, overwrite=args.overwrite,
                       progress=not args.no_progress)
    print((res["out"] / "summary.md").read_text())
    print(f"results: {res['out'] / 'results.json'}; figures: {', '.join(str(p) for p in res['figures'].values())}")
    return 0
