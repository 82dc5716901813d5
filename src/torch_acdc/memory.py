"""The process-wide allocator setting the ``acdc`` commands apply: keep freed memory for reuse (glibc)."""
from __future__ import annotations

__all__ = ["retain_freed_memory"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel: allocations below
    32 MiB come from the heap (``M_MMAP_THRESHOLD``) and the heap is not trimmed below 1 GiB of free space
    (``M_TRIM_THRESHOLD``). Process-wide and not undoable; returns False where it does not apply (not glibc).

    Why: every fresh page the kernel maps in costs a page fault, and with glibc's default (dynamic)
    thresholds a training step of a large layer frees and re-maps its (B, n) temporaries (docs/performance.md).
    The cost: the process keeps its peak heap. Only the ``acdc`` *console script* calls this (never a library
    import, never ``torch_acdc.cli.main()`` called from a host process); ``--system-malloc`` opts out.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
