"""A real multi-megabyte character corpus every machine has offline: the source of Python's standard library.

The selection is fixed (:data:`STDLIB_FILES`: 50 large single-file modules present, as plain ``.py`` files, in
CPython 3.11 to 3.13) and read from ``sysconfig.get_paths()['stdlib']``. The text is the files in that order,
each preceded by a ``# ==== <name> ====`` line; :func:`torch_acdc.experiments.charlm.load_corpus` then holds
out the last ``val_fraction`` of it (by default the tail of the last modules) for validation. The exact text
differs a little between Python patch releases: runs record its SHA-256 to say which one they used.
About 3.3 MB on CPython 3.11.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

__all__ = ["STDLIB_FILES", "STDLIB_CORPUS", "stdlib_dir", "read_stdlib_text"]

STDLIB_CORPUS = "builtin:stdlib-source"

STDLIB_FILES = (
    "_pydecimal", "turtle", "inspect", "typing", "pydoc", "doctest", "argparse", "tarfile", "_pyio",
    "pickletools", "subprocess", "difflib", "locale", "mailbox", "enum", "ipaddress", "pickle", "pdb", "ast",
    "optparse", "dataclasses", "threading", "configparser", "imaplib", "shutil", "ssl", "statistics",
    "smtplib", "platform", "os", "traceback", "functools", "socket", "codecs", "ftplib", "tempfile", "bdb",
    "random", "zipimport", "_collections_abc", "ntpath", "pstats", "trace", "dis", "fractions", "plistlib",
    "uuid", "socketserver", "contextlib", "tokenize",
)


def stdlib_dir() -> Path:
    """The directory of this interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def read_stdlib_text(directory: str | Path | None = None, files: tuple[str, ...] = STDLIB_FILES) -> str:
    """The concatenated source of ``files`` (module names) from ``directory`` (default :func:`stdlib_dir`).

    Raises FileNotFoundError naming every missing file (e.g. a distribution that strips the sources).
    """
    root = Path(directory) if directory is not None else stdlib_dir()
    paths = [root / f"{name}.py" for name in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the standard-library corpus needs {len(files)} source files in {root}; "
                                f"missing {len(missing)}: {', '.join(missing)}")
    return "".join(f"# ==== {p.name} ====\n{p.read_text(encoding='utf-8')}\n" for p in paths)
