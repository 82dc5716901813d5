"""Shared by every ``acdc`` sub-command: the common flags and the numeric validators for argparse ``type=``.

Common flags (added by :func:`torch_acdc.cli.build_parser` to every sub-command, so a command module must not
define them itself): ``--seed`` (non-negative int, default 0), ``--out`` (run folder, default
``runs/<command>-<time>``), ``--fast`` (quick smoke run) and ``--no-progress`` (no progress bars).

``--fast`` vs explicit flags, one rule for every command: **explicit flags win**. A command module lists the
flags ``--fast`` changes in two dicts, ``FULL`` (normal defaults) and ``FAST`` (smoke-run values, a subset of
FULL's keys), keyed by argparse ``dest``, and declares those flags with ``default=None``;
:func:`fill_presets` (called by :func:`torch_acdc.cli.main` after parsing) fills every flag the user did not
give from FAST (with ``--fast``) or FULL. :func:`annotate_presets` appends both values to the flags' help.

Validators (``p.add_argument("--epochs", type=positive_int)``): each turns the string into a number or raises
``argparse.ArgumentTypeError`` with a one-line reason, which argparse prints as
``acdc <cmd>: error: argument --epochs: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import math

__all__ = ["add_common_arguments", "fill_presets", "annotate_presets", "UsageError", "COMMON_FLAGS", "HelpFormatter",
           "add_threads_argument", "add_device_argument", "oversubscription_hint", "ACTIVATION_CHOICES",
           "PERMUTATION_CHOICES",
           "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "finite_float", "fraction",
           "unit_interval"]

ACTIVATION_CHOICES = ("relu", "tanh", "gelu", "sigmoid", "leaky_relu", "none")  # torch_acdc.layers' names
PERMUTATION_CHOICES = ("random", "riffle", None)  # the flag spells None "none"

COMMON_FLAGS = ("--seed", "--out", "--fast", "--no-progress", "--overwrite", "--system-malloc", "--debug")


class UsageError(Exception):
    """A bad combination of flags found by a command's ``run``: reported like an argparse error (exit 2)."""


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


def _checked(name: str, parse, ok, rule: str):
    """A validator: ``parse`` the text, then require ``ok(value)``, else "must be <rule>, got <value>"."""
    def check(text: str):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value:g}")
        return value

    check.__name__ = check.__qualname__ = name
    check.__doc__ = f"argparse type: {rule}."
    return check


positive_int = _checked("positive_int", _int, lambda v: v >= 1, "a positive integer (>= 1)")
nonnegative_int = _checked("nonnegative_int", _int, lambda v: v >= 0, "a non-negative integer (>= 0)")
finite_float = _checked("finite_float", _float, lambda v: True, "a finite number")
positive_float = _checked("positive_float", _float, lambda v: v > 0, "a positive number (> 0)")
nonnegative_float = _checked("nonnegative_float", _float, lambda v: v >= 0, "a non-negative number (>= 0)")
fraction = _checked("fraction", _float, lambda v: 0 < v < 1, "strictly between 0 and 1")
unit_interval = _checked("unit_interval", _float, lambda v: 0 <= v < 1, "in [0, 1)")


def add_common_arguments(p: argparse.ArgumentParser, command: str, fast_help: str | None = None) -> None:
    """Add ``--seed``, ``--out``, ``--fast``, ``--no-progress``, ``--overwrite``, ``--system-malloc`` and
    ``--debug`` to the sub-command parser ``p``."""
    group = p.add_argument_group("common flags (every acdc command)")
    group.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    group.add_argument("--out", default=None, help=f"run folder (default runs/{command}-<time>)")
    group.add_argument("--fast", action="store_true", help=fast_help or "quick smoke run")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument("--overwrite", action="store_true",
                       help="start fresh in an --out that holds an earlier run (refused otherwise)")
    group.add_argument("--system-malloc", action="store_true",
                       help="keep glibc's default malloc thresholds (by default acdc commands retain freed "
                            "memory for reuse: fewer page faults, see docs/performance.md)")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback on errors (also: environment ACDC_DEBUG=1)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written, and every flag's default shown (unless its help already states it, or
    it has none to show)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


def add_threads_argument(p: argparse.ArgumentParser, default: int | None) -> None:
    """``--threads N``: torch's intra-op threads for the command (declared here once for every command that
    times or trains; ``main`` applies it before the command runs)."""
    p.add_argument("--threads", type=positive_int, default=default,
                   help="torch intra-op threads" + (" (default: torch's own)" if default is None else ""))


def _device(text: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda, cuda:N, mps - one that exists on this machine."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    available = ["auto", "cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.append("mps")
    ok = device is not None and (device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_available()
                                  and (device.index is None or device.index < torch.cuda.device_count()))
                                  or (device.type == "mps" and "mps" in available))
    if not ok:
        raise argparse.ArgumentTypeError(f"device {text!r} is not available here; available: {', '.join(available)}")
    return text


def add_device_argument(p: argparse.ArgumentParser, default: str) -> None:
    """``--device``: checked at parse time against the devices this machine has."""
    p.add_argument("--device", type=_device, default=default,
                   help="auto | cpu | cuda | cuda:N (auto: cuda:LOCAL_RANK under torchrun with CUDA, else cpu)")


def oversubscription_hint(threads: int) -> str | None:
    """One line when the machine is already busy: the 1-minute load average plus the ``threads`` this command
    will use exceeds the cores (then every step waits for cores; fewer threads are often faster).
    ``ACDC_NO_BUSY_HINT=1`` silences it."""
    import os

    if os.environ.get("ACDC_NO_BUSY_HINT", "").strip() not in ("", "0"):
        return None
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    cores = os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    suggest = max(1, cores - round(load))
    advice = (f"consider --threads {suggest}" if suggest < threads
              else "other processes hold the cores: expect slower steps than on an idle machine")
    return (f"note: this machine is busy (load average {load:.1f} on {cores} cores) and torch will use {threads} "
            f"thread(s): timings and training slow down a lot; {advice}")


def annotate_presets(p: argparse.ArgumentParser, full: dict, fast: dict) -> None:
    """Append "(default X; --fast: Y)" to the help of every flag in ``full``; check they default to None."""
    for action in p._actions:
        if action.dest in full:
            if action.default is not None:
                raise TypeError(f"{action.option_strings[0]} is preset by --fast/FULL: declare it with default=None")
            text = f"default {_show(full[action.dest])}"
            if action.dest in fast:
                text += f"; --fast: {_show(fast[action.dest])}"
            action.help = f"{action.help} ({text})" if action.help else text
    unknown = set(fast) - set(full)
    if unknown:
        raise TypeError(f"FAST keys missing from FULL: {sorted(unknown)}")


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def fill_presets(args: argparse.Namespace, full: dict, fast: dict) -> argparse.Namespace:
    """Every preset flag left at None (not given) takes FAST's value under ``--fast``, else FULL's; the names
    filled are recorded in ``args._preset_filled`` (so a command can tell them from explicit flags)."""
    args._preset_filled = set()
    for dest, value in full.items():
        if getattr(args, dest, None) is None:
            chosen = fast[dest] if args.fast and dest in fast else value
            setattr(args, dest, list(chosen) if isinstance(chosen, list) else chosen)
            args._preset_filled.add(dest)
    return args
