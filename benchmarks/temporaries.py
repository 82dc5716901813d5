"""Large temporaries, page faults and time of one forward+backward, native kernels vs the pure-torch path.

    python benchmarks/temporaries.py [--retain] [n] [batch] [rounds]      (defaults 4096 256 20)

For one ``ACDC`` and one depth-4 ``StackedACDC`` (fp32, 2 threads, ``layer(x).backward(g)``) it prints, per
step and per path: the number of allocations of at least one (batch, n) fp32 tensor's size (from the
profiler's per-op memory: each op's own net allocation), minor page faults (``getrusage``: fresh memory the kernel had to map in) and the
median time. The paths alternate step by step, so machine noise hits both alike. Run it again under
``GLIBC_TUNABLES=glibc.malloc.trim_threshold=4000000000:glibc.malloc.mmap_threshold=4000000000`` to see what
the page faults that remain cost (glibc then keeps freed memory instead of returning it to the kernel).
It also times one rfft of the same tensor in a tight loop and one rfft of a freshly cloned input (median ms
and faults per call), the cost of fresh memory on its own; ``--retain`` first calls
``retain_freed_memory()`` (what the acdc commands do).
"""
import resource
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from torch_acdc import ACDC, StackedACDC, native
from torch_acdc.memory import retain_freed_memory


def large_allocations(step, nbytes: int) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # each op's own net allocation, in units of one (batch, n) tensor (rfft's (batch, n//2+1) complex counts 1)
    return sum(max(e.self_cpu_memory_usage, 0) // nbytes for e in prof.events())


def fresh_memory_cost(x, rounds):
    """Median ms and minor faults per call of rfft(x) and of rfft(x.clone()) (a fresh input each call)."""
    for name, fn in (("rfft(x)", lambda: torch.fft.rfft(x)), ("rfft(x.clone())", lambda: torch.fft.rfft(x.clone()))):
        for _ in range(3):
            fn()
        ms, faults = [], []
        for _ in range(rounds):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1e3)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        print(f"{name:17s} median ms {statistics.median(ms):6.3f}   minor faults/call {statistics.median(faults):6.0f}")


def main(n=4096, batch=256, rounds=20):
    torch.set_num_threads(2)
    x, g = torch.randn(batch, n), torch.randn(batch, n)
    fresh_memory_cost(x, rounds)
    for name, layer in (("ACDC", ACDC(n)), ("StackedACDC(4)", StackedACDC(n, n, 4))):
        def step():
            layer(x).backward(g)

        stats = {}
        for flag in (True, False):
            with native.use_native(flag):
                for _ in range(3):
                    step()
                stats[flag] = {"allocs": large_allocations(step, batch * n * 4), "faults": [], "ms": []}
        for _ in range(rounds):
            for flag in (True, False):
                with native.use_native(flag):
                    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
                    step()
                    stats[flag]["ms"].append((time.perf_counter() - t0) * 1e3)
                    stats[flag]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        for flag, label in ((True, "native"), (False, "torch path")):
            s = stats[flag]
            print(f"{name:15s} {label:10s} (B, n)-sized allocations/step {s['allocs']:3d}   "
                  f"minor faults/step {statistics.median(s['faults']):7.0f}   median ms {statistics.median(s['ms']):7.2f}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--retain" in argv:
        argv.remove("--retain")
        retain_freed_memory()
    main(*map(int, argv))
