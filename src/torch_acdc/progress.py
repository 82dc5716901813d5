"""Progress bars that appear only where someone watches: on a terminal, when asked for, and when tqdm is
installed (it comes with the ``experiments`` extra). Anywhere else - output redirected to a log file, CI,
a notebook without tqdm - the same calls do nothing, so log files never fill with bar redraws."""
from __future__ import annotations

import sys

__all__ = ["progress_bar", "on_terminal"]


def on_terminal() -> bool:
    """Whether standard error (where bars are drawn) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Silent:
    """The interface of a tqdm bar used here (iterate, update, set_postfix, close), doing nothing."""

    def __init__(self, iterable=None, **_):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar over ``iterable`` (tqdm's keyword arguments) when ``enabled``, on a terminal and with tqdm
    installed; otherwise a silent stand-in with the same methods."""
    if enabled and on_terminal():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _Silent(iterable)
        return tqdm(iterable, **kwargs)
    return _Silent(iterable)
