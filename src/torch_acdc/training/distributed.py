"""One process per device under ``torchrun``: read its environment, join the process group, wrap in DDP.

``torchrun --nproc_per_node=N`` starts N copies of a command and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``) in each. :func:`distributed` turns that environment into
a :class:`DistContext`; without it (a plain ``python``/``acdc`` run) the context is a single process and every
collective below is the identity, so training code is written once and runs either way.

Backend: nccl when the device is CUDA, gloo on CPU.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistContext", "distributed", "unwrap"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size``, its ``device`` and the ``backend`` (None
    for a single process). Collectives are no-ops when ``world_size == 1``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: nn.Module, **ddp_kwargs) -> nn.Module:
        """``model`` in DistributedDataParallel when distributed (gradients averaged over ranks), else itself.

        DDP broadcasts rank 0's parameters and buffers at construction, so all ranks start identical.
        """
        if not self.is_distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)

    def split(self, total: int, what: str = "batch") -> slice:
        """This rank's contiguous share ``[rank * total / W, (rank + 1) * total / W)`` of ``total`` items.

        Raises ValueError unless ``world_size`` divides ``total`` (equal shares keep the DDP gradient average
        equal to the single-process gradient on all ``total`` items).
        """
        if total % self.world_size:
            raise ValueError(f"{what} size {total} must be divisible by the number of processes "
                             f"{self.world_size}")
        per = total // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (a new tensor; ``t`` is not modified)."""
        t = t.clone()
        if self.is_distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_gather_cat(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's ``t`` (same shape on all ranks) concatenated along ``dim`` in rank order."""
        if not self.is_distributed:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=dim)

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's picklable ``obj``, as a list indexed by rank."""
        if not self.is_distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def distributed(device: str | torch.device | None = None, backend: str | None = None,
                timeout: datetime.timedelta = datetime.timedelta(minutes=10)) -> Iterator[DistContext]:
    """Join the process group described by torchrun's environment variables; leave it on exit.

    ``device``: None/'auto' (CUDA device ``LOCAL_RANK`` if CUDA is available, else CPU), or explicit.
    ``backend``: None picks nccl for CUDA and gloo for CPU. With ``WORLD_SIZE`` unset or 1 nothing is
    initialised. If a process group already exists (e.g. created by a test harness) it is used and left open.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    dev = _pick_device(device, local_rank)
    if world_size == 1:
        yield DistContext(device=dev)
        return
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"), timeout=timeout)
    try:
        yield DistContext(rank, world_size, local_rank, dev, dist.get_backend())
    finally:
        if owns_group:
            dist.destroy_process_group()
