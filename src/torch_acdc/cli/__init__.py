"""The ``acdc`` command line: one sub-command per module of this package.

Adding a sub-command: write ``torch_acdc/cli/<name>.py`` defining

* a module docstring, whose first line is the one-line summary shown by ``acdc --help`` (the whole docstring,
  or ``DESCRIPTION`` if the module defines it, is the sub-command's ``--help`` text);
* ``add_arguments(parser)``: the command's own flags; never ``--seed``, ``--out``, ``--fast`` or
  ``--no-progress``, which :func:`torch_acdc.cli.common.add_common_arguments` gives every command (an optional
  ``FAST_HELP`` string describes what ``--fast`` does);
* ``run(args) -> int``: the exit status;

and add one line ``"<name>": "torch_acdc.cli.<module>"`` to COMMANDS below. Numeric flags use the validators of
:mod:`torch_acdc.cli.common` as ``type=``. The experiment logic stays in the library modules.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "bench": "torch_acdc.cli.bench",
    "approx": "torch_acdc.cli.approx",
    "linear-problem": "torch_acdc.cli.linear_problem",
    "classify": "torch_acdc.cli.classify",
    "cost": "torch_acdc.cli.cost",
    "charlm": "torch_acdc.cli.charlm",
    "lstm-bench": "torch_acdc.cli.lstm_bench",
    "compress": "torch_acdc.cli.compress",
}

__all__ = ["COMMANDS", "build_parser", "main"]


def _summary(module) -> str | None:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else None


def build_parser() -> argparse.ArgumentParser:
    """The ``acdc`` parser with one sub-parser per entry of COMMANDS (prefix abbreviations off everywhere)."""
    from .common import add_common_arguments

    parser = argparse.ArgumentParser(prog="acdc", description="ACDC structured efficient linear layers.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=_summary(module), description=getattr(module, "DESCRIPTION", module.__doc__),
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        module.add_arguments(p)
        add_common_arguments(p, name, getattr(module, "FAST_HELP", None))
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``acdc``: parse ``argv`` (default ``sys.argv[1:]``) and run the sub-command."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
