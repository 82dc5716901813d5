"""Large temporaries, page faults and time of one forward+backward, native kernels vs the pure-torch path.

    python benchmarks/temporaries.py [n] [batch] [rounds]      (defaults 4096 256 20)

For one ``ACDC`` and one depth-4 ``StackedACDC`` (fp32, 2 threads, ``layer(x).backward(g)``) it prints, per
step and per path: the number of allocations of at least one (batch, n) fp32 tensor's size (from the
profiler's per-op memory: each op's own net allocation), minor page faults (``getrusage``: fresh memory the kernel had to map in) and the
median time. The paths alternate step by step, so machine noise hits both alike. Run it again under
``GLIBC_TUNABLES=glibc.malloc.trim_threshold=4000000000:glibc.malloc.mmap_threshold=4000000000`` to see what
the page faults that remain cost (glibc then keeps freed memory instead of returning it to the kernel).
"""
import resource
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from torch_acdc import ACDC, StackedACDC, native


def large_allocations(step, nbytes: int) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # each op's own net allocation, in units of one (batch, n) tensor (rfft's (batch, n//2+1) complex counts 1)
    return sum(max(e.self_cpu_memory_usage, 0) // nbytes for e in prof.events())


def main(n=4096, batch=256, rounds=20):
    torch.set_num_threads(2)
    x, g = torch.randn(batch, n), torch.randn(batch, n)
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
    main(*map(int, sys.argv[1:]))
