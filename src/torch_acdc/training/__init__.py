"""Training infrastructure shared by the ``acdc`` training commands: distributed, resumable, reproducible.

* :func:`distributed` / :class:`DistContext` - run unchanged under ``torchrun`` (DDP; gloo on CPU, nccl on CUDA).
* :class:`CheckpointManager`, :func:`atomic_save`, :func:`load_checkpoint` - atomic, checksummed checkpoints.
* :func:`lock_dir`, :func:`check_fresh_start`, :class:`RunFolderError`, :class:`RunLockError` - one writer per
  run folder, no fresh start over an existing run without ``overwrite``.
* :class:`TrainState` - model + optimizer + RNG + data position saved and resumed as one unit.
* :class:`ShardedBatches`, :class:`StreamBatches` - batch orders that are pure functions of (seed, epoch, step).

See docs/training.md for the pattern a training loop follows.
"""
from .batches import ShardedBatches, StreamBatches, StreamChunk, derived_seed
from .checkpoint import Checkpoint, CheckpointError, CheckpointManager, atomic_save, load_checkpoint
from .distributed import DistContext, distributed, unwrap
from .rng import capture_rng_state, restore_rng_state
from .runs import RunFolderError, RunLockError, check_fresh_start, lock_dir
from .state import Resumed, TrainState

__all__ = ["distributed", "DistContext", "unwrap", "CheckpointManager", "CheckpointError", "Checkpoint",
           "atomic_save", "load_checkpoint", "TrainState", "Resumed", "ShardedBatches", "StreamBatches",
           "StreamChunk", "derived_seed", "capture_rng_state", "restore_rng_state",
           "RunFolderError", "RunLockError", "lock_dir", "check_fresh_start"]
