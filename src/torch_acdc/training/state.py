"""Everything a run needs to continue bit for bit, saved and restored as one checkpoint.

A :class:`TrainState` bundles named components with ``state_dict()``/``load_state_dict()`` (model, optimizer,
scheduler, ...) with a :class:`CheckpointManager` and a :class:`DistContext`. ``save`` adds every rank's RNG
state and caller-supplied ``data`` (the data-loader position, e.g. stream offsets and carried recurrent state)
and ``extra`` (history, config); ``resume`` puts it all back and tells the caller where to continue.

Checkpoint layout (a dict, loadable with ``torch_acdc.training.load_checkpoint``)::

    {"format": 1, "step": int, "world_size": int,
     "components": {name: state_dict}, "rng": [capture_rng_state() of rank r for r in range(world_size)],
     "data": dict | None, "extra": dict | None}
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from .runs import RunFolderError
from .distributed import DistContext, unwrap
from .rng import capture_rng_state, restore_rng_state

__all__ = ["TrainState", "Resumed", "FORMAT", "check_layout"]

FORMAT = 1


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run continues: ``step`` optimizer steps are done; ``data``/``extra`` as saved."""

    step: int
    path: Path
    data: dict | None
    extra: dict | None


def check_layout(state, require_data=(), require_extra=()) -> None:
    """Raise ValueError naming what is wrong unless ``state`` has the layout above (``format`` FORMAT, an int
    ``step``, dict ``components``, a non-empty list of RNG dicts, ``data``/``extra`` dicts or None) and
    ``data``/``extra`` hold the keys the caller needs."""
    if not isinstance(state, dict):
        raise ValueError(f"expected a dict, got {type(state).__name__}")
    missing = [k for k in ("format", "step", "components", "rng", "data", "extra") if k not in state]
    if missing:
        raise ValueError(f"missing key(s) {missing} (has {sorted(map(str, state))})")
    if state["format"] != FORMAT:
        raise ValueError(f"format {state['format']!r}, this version reads {FORMAT}")
    if not isinstance(state["step"], int) or isinstance(state["step"], bool) or state["step"] < 0:
        raise ValueError(f"step must be a non-negative int, got {state['step']!r}")
    if not isinstance(state["components"], dict):
        raise ValueError(f"components must be a dict, got {type(state['components']).__name__}")
    rng = state["rng"]
    if not (isinstance(rng, list) and rng and all(isinstance(r, dict) and {"torch", "numpy", "python"} <= set(r)
                                                   for r in rng)):
        raise ValueError("rng must be a non-empty list of capture_rng_state() dicts")
    for name, required in (("data", require_data), ("extra", require_extra)):
        value = state[name]
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict or None, got {type(value).__name__}")
        absent = [k for k in required if not isinstance(value, dict) or k not in value]
        if absent:
            raise ValueError(f"{name} lacks {absent} (has {sorted(value) if isinstance(value, dict) else None})")


class TrainState:
    """Model, optimizer, RNG and data position as one resumable unit.

    ``components``: keyword objects with ``state_dict``/``load_state_dict``; a DistributedDataParallel model
    is unwrapped, so checkpoints do not depend on the number of processes. Both :meth:`save` and
    :meth:`resume` are collective: every rank calls them at the same point. Rank 0 alone writes files.
    """

    def __init__(self, checkpoints: CheckpointManager, ctx: DistContext | None = None, **components):
        if not components:
            raise ValueError("TrainState needs at least one component, e.g. model=..., optimizer=...")
        for name, obj in components.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"component {name!r} must have state_dict() and load_state_dict(), "
                                f"got {type(obj).__name__}")
        self.checkpoints, self.ctx = checkpoints, ctx or DistContext()
        self.components = {name: unwrap(obj) for name, obj in components.items()}
        self._begun = False

    def begin(self, resume: bool, overwrite: bool = False, require_data=(), require_extra=()) -> Resumed | None:
        """Start the run: :meth:`resume` if ``resume`` (None when there is no checkpoint yet), else a fresh
        start, which raises :class:`~torch_acdc.training.runs.RunFolderError` on every rank if the checkpoint
        directory holds another run's checkpoints, unless ``overwrite`` (they are then deleted). Collective."""
        if resume:
            return self.resume(require_data=require_data, require_extra=require_extra)
        error = None
        if self.ctx.is_main:
            try:
                self.checkpoints.start_fresh(overwrite)
            except RunFolderError as e:
                error = (str(e.path), e.reason)
        error = self.ctx.broadcast_object(error)
        if error is not None:
            raise RunFolderError(*error)
        self._begun = True
        return None

    def save(self, step: int, data: dict | None = None, extra: dict | None = None) -> Path | None:
        """Checkpoint after ``step`` optimizer steps. ``data`` and ``extra`` must be rank 0's view of the whole
        job (gather per-rank pieces first, e.g. with ``ctx.all_gather_cat``). Returns the path on rank 0."""
        if not self._begun:  # a caller that never said fresh or resume: refuse to write over another run
            self.begin(resume=False)
        rng = self.ctx.all_gather_object(capture_rng_state())
        path = None
        if self.ctx.is_main:
            path = self.checkpoints.save(step, {
                "format": FORMAT, "step": step, "world_size": self.ctx.world_size,
                "components": {name: obj.state_dict() for name, obj in self.components.items()},
                "rng": rng, "data": data, "extra": extra})
        self.ctx.barrier()
        return path

    def _check_fits(self, state: dict) -> None:
        """ValueError unless ``state`` has every component, and each module's tensors have this run's names
        and shapes (a readable checkpoint of another run is skipped, not loaded)."""
        for name, obj in self.components.items():
            if name not in state["components"]:
                raise ValueError(f"has no {name!r} state (it has {sorted(state['components'])})")
            if isinstance(obj, torch.nn.Module):
                own, theirs = obj.state_dict(), state["components"][name]
                if not isinstance(theirs, dict) or set(own) != set(theirs):
                    raise ValueError(f"does not fit this run's {name}: other parameter names")
                bad = [k for k, v in own.items() if isinstance(v, torch.Tensor)
                       and (not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != v.shape)]
                if bad:
                    raise ValueError(f"does not fit this run's {name}: {bad[0]} has shape "
                                     f"{tuple(theirs[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")

    def resume(self, require_data=(), require_extra=()) -> Resumed | None:
        """Restore the newest readable checkpoint into the components and RNGs; None if there is none.

        Rank 0 picks the checkpoint (unreadable newer files are warned about and renamed ``*.corrupt``) and
        tells the other ranks which file to read. A file that loads but lacks the layout of this module (or the
        ``require_data`` / ``require_extra`` keys) is unusable like a corrupted one: warned about, and the
        previous checkpoint is tried. Raises :class:`CheckpointError` on every rank if checkpoint
        files exist but none is readable, or if the chosen one lacks a component or does not fit it.
        """
        state, choice = None, (None, None)  # (path to load, (path, reason) of the failure)
        if self.ctx.is_main:
            try:
                latest = self.checkpoints.load_latest(
                    map_location="cpu", quarantine=True,
                    validate=lambda st: (check_layout(st, require_data, require_extra), self._check_fits(st)))
                if latest is not None:
                    state, choice = latest.state, (str(latest.path), None)
            except CheckpointError as e:
                choice = (None, (str(e.path), e.reason))
        path, error = self.ctx.broadcast_object(choice)
        if error is not None:
            raise CheckpointError(*error)
        if path is None:
            return None
        path = Path(path)
        if state is None:
            state = load_checkpoint(path, map_location="cpu")
            try:
                check_layout(state, require_data, require_extra)
            except ValueError as e:
                raise CheckpointError(path, f"unexpected content: {e}") from e
        self._begun = True
        for name, obj in self.components.items():
            if name not in state["components"]:
                raise CheckpointError(path, f"has no {name!r} state (it has {sorted(state['components'])})")
            try:
                obj.load_state_dict(state["components"][name])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(path, f"does not fit this run's {name}: {e}") from e
        rng = state["rng"]
        if len(rng) != self.ctx.world_size:
            warnings.warn(f"checkpoint {path} was written by {len(rng)} process(es), resuming with "
                          f"{self.ctx.world_size}: every rank restores rank 0's RNG state, so random draws "
                          "(e.g. dropout) differ from an uninterrupted run", stacklevel=2)
        restore_rng_state(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])
        return Resumed(state["step"], path, state["data"], state["extra"])
