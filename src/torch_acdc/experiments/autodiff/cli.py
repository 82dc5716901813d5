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

from .run import FAST, FULL, PARTS, resolve_settings, run_autodiff

__all__ = ["add_arguments", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


# flag -> (settings key, type, nargs)
_OVERRIDES = {
    "--scaling-ns": ("scaling_ns", _positive_int, "+"), "--scaling-depths": ("scaling_depths", _positive_int, "+"),
    "--batch": ("batch", _positive_int, None), "--dense-limit": ("dense_limit", _positive_int, None),
    "--forward-ns": ("forward_ns", _positive_int, "+"), "--chunk": ("chunk", _positive_int, None),
    "--cells": ("cells", _positive_int, "+"), "--chars": ("chars", _positive_int, "+"),
    "--symbolic-limit": ("symbolic_limit", _positive_float, None), "--matrix-ns": ("matrix_ns", _positive_int, "+"),
    "--rounds": ("rounds", _positive_int, None), "--min-sample": ("min_sample", _positive_float, None),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    for flag, (key, typ, nargs) in _OVERRIDES.items():
        p.add_argument(flag, dest=key, type=typ, nargs=nargs, default=None,
                       help=f"default {FULL[key]} (--fast: {FAST[key]})")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/autodiff-<time>)")
    p.add_argument("--fast", action="store_true", help="small sizes for CI; explicit flags still win")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    settings = resolve_settings({key: getattr(args, key) for key, _, _ in _OVERRIDES.values()}, args.fast)
    if not 2 <= min(settings["chars"]) <= max(settings["chars"]) <= 12:
        raise SystemExit(f"acdc autodiff: --chars must be in [2, 12], got {settings['chars']}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        res = run_autodiff(settings, args.parts, out=args.out, fast=args.fast, seed=args.seed,
                           progress=not args.no_progress)
    finally:
        torch.set_num_threads(threads)
    print((res["out"] / "summary.md").read_text())
    print(f"results: {res['out'] / 'results.json'}; figures: {', '.join(str(p) for p in res['figures'].values())}")
    return 0
