"""Checkpoints that survive being killed at any instant, and that prove their integrity when read.

Writing (:func:`atomic_save`): serialise, write to a temporary file in the target directory, flush and
``fsync`` it, ``os.replace`` it onto the final name, ``fsync`` the directory. A reader therefore sees either
the previous complete file or the new complete file, never a partial one.

File layout: ``MAGIC`` (8 bytes) | payload length (8 bytes, little endian) | SHA-256 of the payload (32 bytes)
| payload (``torch.save`` bytes). :func:`load_checkpoint` checks all three before unpickling, with
``weights_only=True`` (tensors, containers and plain scalars only), so a truncated or bit-flipped file raises
:class:`CheckpointError` naming the file instead of loading garbage. Reading costs O(file size) time and memory.

:class:`CheckpointManager` numbers files by training step, keeps the newest ``keep`` (default 2, so the
previous good checkpoint always survives the newest one) and, when the newest is unreadable, falls back to the
previous one with a warning. It deletes only checkpoints this run owns (wrote, or resumed from), holds the
directory's writer lock (:func:`~torch_acdc.training.runs.lock_dir`) from its first write, and
:meth:`CheckpointManager.start_fresh` refuses to start a new run over another run's checkpoints.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import atomic_write
from .runs import RunFolderError, lock_dir

__all__ = ["CheckpointError", "Checkpoint", "CheckpointManager", "atomic_save", "load_checkpoint"]

MAGIC = b"ACDCCKP1"
_HEADER = len(MAGIC) + 8 + 32


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {self.path} is unusable: {reason}")


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` into ``path`` atomically and durably (:func:`~torch_acdc.files.atomic_write`:
    temp file, fsync, rename, fsync directory; the umask's permissions; a full disk names the file)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    header = MAGIC + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest()
    return atomic_write(path, [header, payload])


def load_checkpoint(path: str | os.PathLike, map_location=None):
    """The object saved by :func:`atomic_save` at ``path``, after checking length and checksum.

    Raises :class:`CheckpointError` (naming ``path``) if the file is missing, not a checkpoint, truncated,
    corrupted or does not unpickle with ``weights_only=True``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror or e})") from e
    if len(data) < _HEADER or data[:len(MAGIC)] != MAGIC:
        raise CheckpointError(path, f"not a torch-acdc checkpoint (no {MAGIC!r} header; {len(data)} bytes)")
    length = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
    if len(data) - _HEADER != length:
        raise CheckpointError(path, f"truncated or padded: header promises {length} payload bytes, file has "
                                    f"{len(data) - _HEADER}")
    payload = memoryview(data)[_HEADER:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC) + 8:_HEADER]:
        raise CheckpointError(path, "SHA-256 checksum mismatch (the file is corrupted)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the caller
        raise CheckpointError(path, f"payload does not load ({type(e).__name__}: {e})") from e


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the training ``step`` it was taken after, its file and its contents."""

    step: int
    path: Path
    state: dict


class CheckpointManager:
    """Step-numbered checkpoints ``<directory>/<prefix>-<step:08d>.pt``, the newest ``keep`` retained.

    Only one process may call :meth:`save` (rank 0 in a distributed job; enforced across processes by the
    directory's lock, :class:`~torch_acdc.training.runs.RunLockError` names the holder); any process may load.
    Retention deletes only files this manager owns: those it wrote and those present when it resumed
    (:meth:`load_latest`) - never another run's.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2, prefix: str = "ckpt"):
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ValueError(f"prefix must be letters, digits or '_', got {prefix!r}")
        self.directory, self.keep, self.prefix = Path(directory), keep, prefix
        self._pattern = re.compile(rf"{prefix}-(\d+)\.pt")
        self._owned: set[Path] = set()

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.prefix}-{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint file present, oldest first (temp files are never listed)."""
        if not self.directory.is_dir():
            return []
        found = ((self._pattern.fullmatch(p.name), p) for p in self.directory.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def save(self, step: int, state: dict) -> Path:
        """Write ``state`` as the checkpoint of ``step`` atomically, then delete all but the newest ``keep`` of
        this manager's own checkpoints.

        Only files this manager owns are deleted. Takes the directory's writer lock first (raises
        :class:`~torch_acdc.training.runs.RunLockError` if another process holds it), then removes temp files
        left by a writer of this directory that was killed mid-write.
        """
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        lock_dir(self.directory)
        for stale in self.directory.glob(f".{self.prefix}-*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
        path = atomic_save(state, self.path_for(step))
        self._owned.add(path)
        mine = [p for _, p in self.checkpoints() if p in self._owned]
        for old in mine[:-self.keep]:
            old.unlink(missing_ok=True)
            self._owned.discard(old)
        return path

    def start_fresh(self, overwrite: bool = False) -> None:
        """Declare that a new run starts here: raise :class:`~torch_acdc.training.runs.RunFolderError` if the
        directory holds checkpoints (another run's), unless ``overwrite``, which deletes them (explicit
        consent; other files are left alone). Takes the writer lock."""
        found = self.checkpoints()
        if found and not overwrite:
            raise RunFolderError(self.directory, f"holds checkpoints of an earlier run ({found[0][1].name} ... "
                                                 f"{found[-1][1].name}); resume it (--resume), replace it "
                                                 "(--overwrite) or choose another folder")
        if found:
            lock_dir(self.directory)
            for _, path in found:
                path.unlink(missing_ok=True)

    def load_latest(self, map_location=None, quarantine: bool = False, validate=None) -> Checkpoint | None:
        """The newest readable checkpoint, or None if there is none at all.

        An unreadable newer file is reported with a ``UserWarning`` naming it and the reason, and the previous
        one is tried. With ``quarantine`` (use on the writing process only) such a file is renamed to
        ``<name>.corrupt`` so it is kept for inspection but never chosen again. If files exist but none is
        readable, raises :class:`CheckpointError` for the newest, listing every failure. ``validate(state)``,
        if given, checks the content and raises ValueError for a file that loads but is not what the caller
        expects (another run's): such a file is skipped like an unreadable one, but never quarantined. The files present become this
        manager's own (a run that resumes continues them).
        """
        failures = []
        found = self.checkpoints()
        self._owned.update(path for _, path in found)
        for step, path in reversed(found):
            foreign = False
            try:
                state = load_checkpoint(path, map_location)
                if validate is not None:
                    try:
                        validate(state)
                    except ValueError as e:
                        foreign = True
                        raise CheckpointError(path, f"unexpected content: {e}") from e
                return Checkpoint(step, path, state)
            except CheckpointError as e:
                failures.append(e)
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
                if quarantine and not foreign:  # a corrupted file; a readable foreign one is left as it is
                    os.replace(path, path.with_name(path.name + ".corrupt"))
                    self._owned.discard(path)
        if failures:
            raise CheckpointError(failures[0].path, "no readable checkpoint in " f"{self.directory}: "
                                  + "; ".join(f"{e.path.name}: {e.reason}" for e in failures))
        return None
