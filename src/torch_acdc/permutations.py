"""Permutations placed between stacked ACDC layers, as gather indices over the last dimension.

A permutation ``q`` of length n acts as ``x[..., q]``. Kinds: ``"random"`` (uniform, drawn from the
global torch RNG unless a generator is given), ``"riffle"`` (perfect out-shuffle: interleave the two halves,
as in ShuffleNet), ``None`` (identity).
"""
from __future__ import annotations

import torch

KINDS = ("random", "riffle", None)

__all__ = ["KINDS", "make_permutation", "riffle", "inverse", "check_kind", "check_permutations"]


def check_kind(kind) -> None:
    if kind not in KINDS:
        hint = " (no permutation is spelled None, not a string)" if str(kind).lower() == "none" else ""
        raise ValueError(f"unknown permutation {kind!r}: expected one of 'random', 'riffle' or None{hint}")


def riffle(n: int) -> torch.Tensor:
    """Perfect riffle shuffle of n items: out[2i] = x[i], out[2i+1] = x[ceil(n/2) + i]."""
    idx = torch.arange(n)
    q = torch.empty(n, dtype=torch.long)
    half = (n + 1) // 2
    q[0::2] = idx[:half]
    q[1::2] = idx[half:]
    return q


def make_permutation(kind, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A length-n permutation (long tensor) of the given kind."""
    check_kind(kind)
    if kind == "random":
        return torch.randperm(n, generator=generator)
    if kind == "riffle":
        return riffle(n)
    return torch.arange(n)


def inverse(q: torch.Tensor) -> torch.Tensor:
    """The inverse permutation: x[..., q][..., inverse(q)] == x."""
    inv = torch.empty_like(q)
    inv[q] = torch.arange(q.numel(), device=q.device)
    return inv


def check_permutations(perms, rows: int, n: int) -> str | None:
    """None if ``perms`` is an integer tensor of shape (rows, n) whose every row is a permutation of
    range(n); else what is wrong (expected vs given, the first bad row)."""
    if not isinstance(perms, torch.Tensor):
        return f"expected a tensor of shape ({rows}, {n}), got {type(perms).__name__}"
    if tuple(perms.shape) != (rows, n):
        return f"expected shape ({rows}, {n}), got {tuple(perms.shape)}"
    if perms.dtype.is_floating_point or perms.dtype.is_complex or perms.dtype == torch.bool:
        return f"expected an integer (int64) tensor, got {perms.dtype}"
    for i, row in enumerate(perms.cpu()):
        if not torch.equal(row.sort().values, torch.arange(n, dtype=row.dtype)):
            bad = row[(row < 0) | (row >= n)]
            detail = (f"entries out of range [0, {n}): {bad[:5].tolist()}" if bad.numel()
                      else "repeated entries")
            return f"row {i} is not a permutation of range({n}) ({detail})"
    return None
