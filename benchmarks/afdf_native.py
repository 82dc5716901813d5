"""AFDF native kernels vs the pure-torch path: forward and forward+backward (docs/performance.md, "AFDF").

Interleaved timing (native and torch path round-robin, the order swapped every round), median of ROUNDS,
fp32, B = 256, one AFDF layer with bias; f+b = layer(x).backward(g), forward under no_grad.
Run: python benchmarks/afdf_native.py [THREADS=2] [ROUNDS=15]
"""
import statistics
import sys
import time

import torch

from torch_acdc import AFDF, native

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
torch.set_num_threads(threads)
torch.manual_seed(0)
B = 256
assert native.available(), "native kernels could not be built"

print(f"AFDF, B={B}, fp32, {threads} threads, median of {rounds} interleaved rounds (ms)")
print("| n | native fwd | torch fwd | torch / native fwd | native f+b | torch f+b | torch / native f+b |")
print("|---|---|---|---|---|---|---|")
for n in (1024, 4096):
    layer = AFDF(n)
    x, g = torch.randn(B, n, requires_grad=True), torch.randn(B, n)

    def fwd(flag):
        def step():
            with native.use_native(flag), torch.no_grad():
                layer(x)
        return step

    def fb(flag):
        def step():
            with native.use_native(flag):
                x.grad = None
                layer.zero_grad(set_to_none=True)
                layer(x).backward(g)
        return step

    fns = [fwd(True), fwd(False), fb(True), fb(False)]
    for f in fns:  # warm-up (and the first-use build)
        f(), f()
    times = [[] for _ in fns]
    for pair in ((0, 1), (2, 3)):  # forward, then f+b: native and torch round-robin, the order swapped
        for i in range(rounds):    # every round (whichever runs second finds the other's warm caches)
            for j in (pair if i % 2 == 0 else pair[::-1]):
                s = time.perf_counter()
                fns[j]()
                times[j].append((time.perf_counter() - s) * 1e3)
    nf, tf, nb, tb = (statistics.median(t) for t in times)
    print(f"| {n} | {nf:.2f} | {tf:.2f} | {tf / nf:.2f} | {nb:.2f} | {tb:.2f} | {tb / nb:.2f} |")
