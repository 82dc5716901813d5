"""The ``acdc`` command line: one sub-command per job, each defined in its own module.

Every module listed in COMMANDS provides ``add_arguments(parser)`` and ``run(args) -> int``; its docstring's
first line is the command's help text.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "bench": "torch_acdc.bench_cli",
    "approx": "torch_acdc.experiments.approx",
    "linear-problem": "torch_acdc.experiments.linear_problem",
    "classify": "torch_acdc.experiments.classify",
    "cost": "torch_acdc.cost_cli",
    "charlm": "torch_acdc.experiments.charlm",
    "lstm-bench": "torch_acdc.lstm_bench_cli",
    "autodiff": "torch_acdc.experiments.autodiff.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acdc", description="ACDC structured efficient linear layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        help_text = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
