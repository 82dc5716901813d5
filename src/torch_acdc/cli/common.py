"""Shared by every ``acdc`` sub-command: the common flags and the numeric validators for argparse ``type=``.

Common flags (added by :func:`torch_acdc.cli.build_parser` to every sub-command, so a command module must not
define them itself): ``--seed`` (non-negative int, default 0), ``--out`` (run folder, default
``runs/<command>-<time>``), ``--fast`` (quick smoke run) and ``--no-progress`` (no progress bars).

Validators (``p.add_argument("--epochs", type=positive_int)``): each turns the string into a number or raises
``argparse.ArgumentTypeError`` with a one-line reason, which argparse prints as
``acdc <cmd>: error: argument --epochs: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import math

__all__ = ["add_common_arguments", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float",
           "finite_float", "fraction", "COMMON_FLAGS"]

COMMON_FLAGS = ("--seed", "--out", "--fast", "--no-progress")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (>= 0), got {value}")
    return value


def finite_float(text: str) -> float:
    """Any finite float (no nan / inf)."""
    return _float(text)


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number (> 0), got {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number (>= 0), got {value:g}")
    return value


def fraction(text: str) -> float:
    """A float strictly between 0 and 1."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value:g}")
    return value


def add_common_arguments(p: argparse.ArgumentParser, command: str, fast_help: str | None = None) -> None:
    """Add ``--seed``, ``--out``, ``--fast`` and ``--no-progress`` to the sub-command parser ``p``."""
    group = p.add_argument_group("common flags (every acdc command)")
    group.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    group.add_argument("--out", default=None, help=f"run folder (default runs/{command}-<time>)")
    group.add_argument("--fast", action="store_true", help=fast_help or "quick smoke run")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
