"""The one cache of constant tables (DCT twiddles, Makhoul permutations, AFDF indices), safe and bounded.

Tables are keyed by the builder and its arguments (size, dtype, device) and built at most once per key. Two
guarantees that a plain ``functools.lru_cache`` does not give:

* **Plain tensors, whatever is active at the first call.** A table is built with inference mode off, grad
  off, and every torch-function mode (``with torch.device("meta")``), dispatch mode (FakeTensorMode under
  ``torch.export``) and functorch transform (vmap, grad) suspended. So a first call under
  ``torch.inference_mode()``, ``torch.export`` or ``torch.func.vmap`` cannot leave an inference / fake /
  batched tensor in the cache for later calls. While ``torch.compile`` / ``torch.export`` trace, or a
  dispatch mode such as ``FakeTensorMode`` is active, tables are built in that mode and not cached (the
  tracer records the few O(n) ops; fake tensors must meet fake tables).
* **Bounded memory.** Entries are evicted least-recently-used once their tensors together exceed
  :func:`cache_limit` bytes (default ``DEFAULT_LIMIT_BYTES``); the newest entry is always kept, even if it
  alone is larger. :func:`clear` frees everything; :func:`cache_info` reports entries and bytes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

__all__ = ["cached", "clear", "cache_info", "cache_limit", "set_cache_limit", "plain_mode", "tracing",
           "DEFAULT_LIMIT_BYTES"]

DEFAULT_LIMIT_BYTES = 256 * 2**20

_lock = threading.RLock()
_entries: OrderedDict = OrderedDict()  # key -> (value, nbytes)
_state = {"limit": DEFAULT_LIMIT_BYTES, "bytes": 0}


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def _nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


@contextlib.contextmanager
def plain_mode():
    """Suspend inference mode, grad mode, torch-function / dispatch modes and functorch transforms, so that
    tensors created inside are ordinary tensors on the devices asked for."""
    from torch.utils._python_dispatch import _disable_current_modes

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch._C._DisableFuncTorch())
        stack.enter_context(_disable_current_modes())
        stack.enter_context(torch._C.DisableTorchFunction())
        yield


def tracing() -> bool:
    """True under torch.compile / torch.export tracing or an active dispatch mode (e.g. FakeTensorMode): the
    tables must then be built in that mode (fake tensors mix only with fake tensors) and not cached."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None


def _check_plain(value, name: str) -> None:
    for t in _tensors(value):
        if type(t) is not torch.Tensor or t.is_inference() or t.requires_grad:
            raise RuntimeError(f"torch_acdc.tables: builder {name} produced a non-plain tensor "
                               f"({type(t).__name__}, inference={t.is_inference()}, "
                               f"requires_grad={t.requires_grad}); refusing to cache it")


def _evict() -> None:
    while len(_entries) > 1 and _state["bytes"] > _state["limit"]:
        _, (_, nbytes) = _entries.popitem(last=False)
        _state["bytes"] -= nbytes


def cached(builder: Callable) -> Callable:
    """Decorator: ``builder(*args)`` (hashable args, e.g. ``(n, dtype, device)``) built once per args in
    :func:`plain_mode` and kept in the shared bounded cache. Use only for constant tables."""
    name = getattr(builder, "__qualname__", repr(builder))

    def lookup(*args):
        if tracing():
            return builder(*args)
        key = (name, *args)
        with _lock:
            hit = _entries.get(key)
            if hit is not None:
                _entries.move_to_end(key)
                return hit[0]
        with plain_mode():
            value = builder(*args)
        _check_plain(value, name)
        nbytes = _nbytes(value)
        with _lock:
            if key not in _entries:
                _entries[key] = (value, nbytes)
                _state["bytes"] += nbytes
                _evict()
            return _entries[key][0] if key in _entries else value

    def peek(*args):
        """The cached value for ``args`` or None: no lock, no LRU update, no build. Only for eager calls outside
        any tracing or dispatch mode (the caller checks), where it is the whole per-call cost of a table."""
        hit = _entries.get((name, *args))
        return None if hit is None else hit[0]

    lookup.peek = peek
    lookup.__wrapped__ = builder
    lookup.__name__ = getattr(builder, "__name__", "lookup")
    lookup.__qualname__ = name
    lookup.__doc__ = builder.__doc__
    return lookup


def clear() -> None:
    """Drop every cached table (they are rebuilt on the next call)."""
    with _lock:
        _entries.clear()
        _state["bytes"] = 0


def cache_info() -> dict:
    """``{"entries": int, "bytes": int, "limit": int}`` of the shared table cache."""
    with _lock:
        return {"entries": len(_entries), "bytes": _state["bytes"], "limit": _state["limit"]}


def cache_limit() -> int:
    """The byte budget above which least-recently-used tables are evicted."""
    return _state["limit"]


def set_cache_limit(max_bytes: int) -> None:
    """Set the byte budget of the table cache (0 keeps only the newest table); evicts at once if needed."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    with _lock:
        _state["limit"] = max_bytes
        _evict()
