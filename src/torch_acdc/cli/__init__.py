"""The ``acdc`` command line: one sub-command per module of this package.

Adding a sub-command: write ``torch_acdc/cli/<name>.py`` defining

* a module docstring, whose first line is the one-line summary shown by ``acdc --help`` (the whole docstring,
  or ``DESCRIPTION`` if the module defines it, is the sub-command's ``--help`` text);
* ``add_arguments(parser)``: the command's own flags; never ``--seed``, ``--out``, ``--fast`` or
  ``--no-progress``, which :func:`torch_acdc.cli.common.add_common_arguments` gives every command (an optional
  ``FAST_HELP`` string describes what ``--fast`` does);
* optionally ``FULL`` and ``FAST``: the defaults of the flags ``--fast`` changes (declare those flags with
  ``default=None``; see :mod:`torch_acdc.cli.common`: explicit flags always win);
* ``run(args) -> int``: the exit status (raise :class:`~torch_acdc.cli.common.UsageError` for a bad flag
  combination; library exceptions are turned into one error line by :mod:`torch_acdc.cli.errors`);

and add one line ``"<name>": "torch_acdc.cli.<module>"`` to COMMANDS below. Numeric flags use the validators of
:mod:`torch_acdc.cli.common` as ``type=``. The experiment logic stays in the library modules.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "build": "torch_acdc.cli.build",
    "bench": "torch_acdc.cli.bench",
    "approx": "torch_acdc.cli.approx",
    "linear-problem": "torch_acdc.cli.linear_problem",
    "classify": "torch_acdc.cli.classify",
    "cost": "torch_acdc.cli.cost",
    "charlm": "torch_acdc.cli.charlm",
    "lstm-bench": "torch_acdc.cli.lstm_bench",
    "autodiff": "torch_acdc.cli.autodiff",
    "compress": "torch_acdc.cli.compress",
}

__all__ = ["COMMANDS", "Parser", "build_parser", "main", "console_main", "version"]


def _summary(module) -> str | None:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else None


def _summary_from_source(module_name: str) -> str | None:
    """The first docstring line of a command module, read from its source (no import: ``acdc --help`` and
    ``acdc --version`` answer without loading torch)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    return doc.strip().splitlines()[0] if doc else None


EPILOG = """\
common flags (every command): --seed N (default 0), --out DIR (run folder, default runs/<command>-<time>),
  --fast (quick smoke run), --no-progress (no progress bars), --debug (full traceback on errors).
--fast only changes the defaults: flags you give explicitly always win (acdc classify --fast --epochs 1 trains
  one epoch). Abbreviated flags are not accepted (--seed is --seed, never --seeds).
errors: one line "acdc <command>: error: ..." on stderr; the traceback with --debug or ACDC_DEBUG=1.
exit status: 0 success, 1 the command failed, 2 bad flags, 130 interrupted.
"acdc <command> --help" describes a command and its flags; see docs/cli.md."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``acdc <cmd>: error: ...`` (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version() -> str:
    """The installed torch-acdc version (package metadata), else torch_acdc.__version__."""
    from importlib import metadata

    try:
        return metadata.version("torch-acdc")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``acdc`` parser with one sub-parser per entry of COMMANDS (prefix abbreviations off everywhere).

    ``commands``: the names whose modules are imported and whose flags are declared (default all); the others
    get a sub-parser with their one-line summary only (read from source), so ``acdc --help`` and a single
    command's parse import nothing else. A command module's optional ``THREADS`` / ``DEVICE`` attributes
    declare ``--threads`` / ``--device`` (with that default) through :mod:`torch_acdc.cli.common`.
    """
    from .common import HelpFormatter, add_common_arguments, add_device_argument, add_threads_argument, annotate_presets

    wanted = set(COMMANDS) if commands is None else set(commands)
    parser = Parser(prog="acdc", description="ACDC structured efficient linear layers.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"acdc (torch-acdc) {version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in COMMANDS.items():
        if name not in wanted:
            sub.add_parser(name, help=_summary_from_source(module_name), add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=_summary(module), description=getattr(module, "DESCRIPTION", module.__doc__),
                           formatter_class=HelpFormatter, allow_abbrev=False)
        module.add_arguments(p)
        if hasattr(module, "THREADS"):
            add_threads_argument(p, module.THREADS)
        if hasattr(module, "DEVICE"):
            add_device_argument(p, module.DEVICE)
        add_common_arguments(p, name, getattr(module, "FAST_HELP", None))
        presets = (getattr(module, "FULL", {}), getattr(module, "FAST", {}))
        annotate_presets(p, *presets)
        for action in p._actions:  # a flag declared without help still shows its default
            if action.option_strings and action.help is None and action.default not in (None, False):
                action.help = "(default: %(default)s)"
        p.set_defaults(_run=module.run, _presets=presets, _times=getattr(module, "TIMES", False))
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first token that is one), or None."""
    return next((a for a in argv if a in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``acdc``: parse ``argv`` (default ``sys.argv[1:]``), run the sub-command, return its exit
    status; errors are reported as one line (see :mod:`torch_acdc.cli.errors`). Changes nothing process-wide
    but torch's thread count when ``--threads`` is given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    try:
        parser = build_parser([command] if command else [])
    except ModuleNotFoundError as exc:  # a command module needs an extra that is not installed
        from .errors import missing_extra

        if missing_extra(exc) is None:
            raise
        print(f"acdc {command}: error: {missing_extra(exc)}", file=sys.stderr)
        return 1
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named with the sub-command that was given the flag
        prog = f"acdc {args.command}" if getattr(args, "command", None) else "acdc"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
    from .common import fill_presets, oversubscription_hint
    from .errors import debug_enabled, report

    fill_presets(args, *args._presets)
    args._argv = argv  # what was asked, for commands that print commands (--list-jobs)
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        if args._times:
            import torch

            from .. import native

            if native.enabled():  # a first-use build happens here, its one line before any progress bar
                native.available()
            hint = oversubscription_hint(torch.get_num_threads())
            if hint:
                print(hint, file=sys.stderr)
        return int(args._run(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if debug_enabled(args):
            raise
        return report(args.command, exc)


def console_main() -> None:
    """The ``acdc`` console script: ``main`` plus what only a process of its own may do - keep freed memory
    for reuse (:func:`torch_acdc.memory.retain_freed_memory`, unless ``--system-malloc``) - and a quiet exit
    (status 130) on Ctrl-C at any moment, imports included."""
    try:
        argv = sys.argv[1:]
        if "--system-malloc" not in argv:
            from ..memory import retain_freed_memory

            retain_freed_memory()
        sys.exit(main(argv))
    except KeyboardInterrupt:
        print("acdc: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    console_main()
