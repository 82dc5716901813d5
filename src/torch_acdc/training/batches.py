"""Deterministic, sharded batch orders: which examples a step sees is a pure function of (seed, epoch, step).

Nothing about the order lives in iterator state, so a run resumed at step k, or the same run spread over W
processes, sees exactly the same *global* batches as one uninterrupted process. Each rank takes a contiguous
``1/W`` share of every global batch (the global batch size must be divisible by W); with the loss averaged
per rank, DDP's gradient average then equals the single-process gradient on the global batch.

* :class:`ShardedBatches` - minibatches of example indices for a dataset (classification).
* :class:`StreamBatches` - truncated-BPTT chunks of parallel streams over one long token sequence (language
  models); the caller carries each stream's recurrent state from one step to the next.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch

__all__ = ["derived_seed", "ShardedBatches", "StreamBatches", "StreamChunk"]


def derived_seed(*keys) -> int:
    """A 63-bit seed from any tuple of keys (e.g. ``(seed, "epoch", 3)``); distinct keys give unrelated seeds."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _check_shard(global_size: int, rank: int, world_size: int, what: str) -> int:
    if not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if global_size < 1 or global_size % world_size:
        raise ValueError(f"{what} {global_size} must be a positive multiple of the number of processes "
                         f"{world_size}")
    return global_size // world_size


class ShardedBatches:
    """Epoch-shuffled minibatches of ``range(num_examples)``, ``global_batch`` per step, split over ranks.

    Epoch ``e`` is the permutation drawn from ``derived_seed(seed, "epoch", e)`` (identity order when
    ``shuffle=False``); step ``s`` belongs to epoch ``s // steps_per_epoch`` and takes the next
    ``global_batch`` indices of it (an incomplete last batch is dropped so every step weighs the same).
    ``indices(step)``: LongTensor (global_batch / world_size,) for this rank. O(num_examples) per new epoch.
    """

    def __init__(self, num_examples: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.local_batch = _check_shard(global_batch, rank, world_size, "global batch size")
        if num_examples < global_batch:
            raise ValueError(f"need at least one full batch: {num_examples} examples < global batch "
                             f"{global_batch}")
        self.num_examples, self.global_batch, self.seed = num_examples, global_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.steps_per_epoch = num_examples // global_batch
        self._epoch, self._order = None, None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", epoch))
                self._order = torch.randperm(self.num_examples, generator=g)
            else:
                self._order = torch.arange(self.num_examples)
            self._epoch = epoch
        return self._order

    def global_indices(self, step: int) -> torch.Tensor:
        """All ranks' indices of ``step``: LongTensor (global_batch,)."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        start = (step % self.steps_per_epoch) * self.global_batch
        return self._epoch_order(self.epoch_of(step))[start:start + self.global_batch]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's contiguous share of :meth:`global_indices`: LongTensor (local_batch,)."""
        start = self.rank * self.local_batch
        return self.global_indices(step)[start:start + self.local_batch]


class StreamChunk(NamedTuple):
    """One TBPTT step for this rank: ``inputs`` and next-token ``targets`` (local_streams, bptt), and
    ``first``, True on the first chunk of an epoch (the caller must reset the recurrent state)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    first: bool


class StreamBatches:
    """``streams`` parallel read heads over a 1-D token tensor, advancing ``bptt`` tokens per step.

    Epoch ``e`` starts at a shift in ``[0, bptt)`` drawn from ``derived_seed(seed, "shift", e)`` (0 when
    ``shuffle=False``) so chunk boundaries move between epochs; stream ``i`` then reads its own contiguous
    stretch of ``length = (len(tokens) - bptt) // streams`` tokens, ``chunks_per_epoch = length // bptt`` steps.
    ``offsets(step)`` gives every stream's read position (the data-loader position a checkpoint records);
    ``batch(step)`` gathers this rank's streams, O(local_streams * bptt).
    """

    def __init__(self, tokens: torch.Tensor, streams: int, bptt: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if tokens.dim() != 1 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a 1-D LongTensor, got {tokens.dtype} of shape {tuple(tokens.shape)}")
        if not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
        self.local_streams = _check_shard(streams, rank, world_size, "number of streams (batch)")
        self.length = (len(tokens) - bptt) // streams
        self.chunks_per_epoch = self.length // bptt
        if self.chunks_per_epoch < 1:
            raise ValueError(f"text of {len(tokens)} tokens is too short for {streams} streams of {bptt}-token "
                             f"chunks: need at least {streams * bptt + bptt}")
        self.tokens, self.streams, self.bptt, self.seed = tokens, streams, bptt, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle

    def epoch_of(self, step: int) -> int:
        return step // self.chunks_per_epoch

    def offsets(self, step: int) -> torch.Tensor:
        """Start position in ``tokens`` of every stream's chunk at ``step``: LongTensor (streams,)."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        epoch, chunk = divmod(step, self.chunks_per_epoch)
        shift = derived_seed(self.seed, "shift", epoch) % self.bptt if self.shuffle else 0
        return shift + torch.arange(self.streams) * self.length + chunk * self.bptt

    def batch(self, step: int) -> StreamChunk:
        """This rank's chunk of ``step`` (its contiguous share of the streams)."""
        start = self.rank * self.local_streams
        offsets = self.offsets(step)[start:start + self.local_streams]
        window = self.tokens[offsets[:, None] + torch.arange(self.bptt + 1)]
        return StreamChunk(window[:, :-1], window[:, 1:], step % self.chunks_per_epoch == 0)
