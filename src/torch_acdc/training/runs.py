"""Run-folder ownership: one writer per folder (a lock naming its holder) and no silent fresh start over a run.

* :func:`lock_dir` takes an exclusive ``flock`` on ``<folder>/.acdc.lock`` for the rest of the process (the
  kernel releases it when the process exits, also on SIGKILL) and writes the holder (pid, host, start time)
  into it. A second process gets :class:`RunLockError` naming that holder. Re-locking a folder this process
  already holds is a no-op. On platforms without ``fcntl`` (Windows) no lock is taken.
* :func:`check_fresh_start` refuses (:class:`RunFolderError`) to start a new run in a folder that already
  holds one (``results.json`` or a ``checkpoints`` folder) unless the run resumes it or ``overwrite`` is set.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunFolderError", "RunLockError", "lock_dir", "check_fresh_start", "LOCK_NAME"]

LOCK_NAME = ".acdc.lock"
_held: dict[Path, int] = {}  # resolved folder -> open fd of its lock file (held until the process exits)
_mutex = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child does not hold its parent's folders (the lock belongs to the parent's open file): it must
    take a lock of its own, which fails while the parent holds it."""
    global _mutex
    _held.clear()
    _mutex = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class RunFolderError(RuntimeError):
    """A run folder that this run may not write: ``path`` names it, ``reason`` says why and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"run folder {self.path}: {reason}")


class RunLockError(RunFolderError):
    """Another process holds the folder's lock; ``holder`` is what it wrote there (pid, host, start time)."""

    def __init__(self, path: str | os.PathLike, holder: str):
        self.holder = holder
        super().__init__(path, f"is in use by another process ({holder or 'holder unknown'}); wait for it to "
                               "finish or choose another folder")


def lock_dir(directory: str | os.PathLike) -> Path:
    """Take (or confirm this process holds) the exclusive writer lock of ``directory`` (created if missing).

    Returns the lock file's path. Raises :class:`RunLockError` naming the holder if another process has it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key, lock = directory.resolve(), directory / LOCK_NAME
    with _mutex:
        if key in _held or fcntl is None:
            return lock
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunLockError(directory, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        _held[key] = fd
    return lock


def holds_run(directory: str | os.PathLike) -> list[str]:
    """The entries of ``directory`` that show it holds a run: ``results.json``, or a ``checkpoints`` folder with
    something in it (an empty one, left by a run that failed before its first checkpoint, holds nothing)."""
    directory = Path(directory)
    found = ["results.json"] if (directory / "results.json").exists() else []
    ckpt = directory / "checkpoints"
    if ckpt.is_dir() and any(ckpt.iterdir()):
        found.append("checkpoints")
    return found


def check_fresh_start(directory: str | os.PathLike, resume: bool, overwrite: bool, can_resume: bool = True) -> None:
    """Raise :class:`RunFolderError` if a fresh run (``resume`` False) would start over the run already in
    ``directory`` and ``overwrite`` is not set. ``can_resume``: whether the command has ``--resume`` (the
    advice names only what the command offers)."""
    found = holds_run(directory)
    if found and not resume and not overwrite:
        options = "resume it (--resume), replace it (--overwrite)" if can_resume else "replace it (--overwrite)"
        raise RunFolderError(directory, f"already holds a run ({', '.join(found)}); {options} or choose another "
                                        "folder")
