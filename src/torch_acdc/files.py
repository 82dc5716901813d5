"""Writing a file so that readers see the old or the new version, never a part, and errors name the file.

:func:`atomic_write` writes into a private temporary file in the target's folder, flushes and ``fsync``s it,
gives it the permissions a plain ``open`` would (``0o666`` minus the process umask: collaborators sharing a
results folder can read it), renames it onto the target and ``fsync``s the folder. A full disk, a file-size
limit or any other OSError leaves the previous file untouched, removes the temporary, and is re-raised as an
OSError whose ``filename`` is the target (so the one-line error names it).
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "file_mode"]

_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode a newly created file gets from ``open``: 0o666 minus the current umask."""
    with _umask_lock:  # reading the umask means setting it; no other thread may see the temporary value
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where directories can be opened; a no-op elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, chunks) -> Path:
    """Write the bytes-like ``chunks`` (one object or a sequence) to ``path`` atomically and durably."""
    path = Path(path)
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = [chunks]
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror} (creating a temporary file to write)", str(path)) from e
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"{e.strerror or e} (while writing)", str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
