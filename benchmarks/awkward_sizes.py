"""Sizes with large prime factors: one rfft and one ACDC forward+backward at B = 256, fp32, interleaved in one
process, as multiples of n = 4096 (docs/performance.md, "Awkward sizes"). Fresh-memory page faults are
excluded (``retain_freed_memory``, as the acdc commands do); the native build and FFT plans are warmed up.

    python benchmarks/awkward_sizes.py [threads]
"""
import sys
import warnings

import torch

from torch_acdc import ACDC, native
from torch_acdc.bench import interleaved_ms, machine
from torch_acdc.memory import retain_freed_memory
from torch_acdc.transform import fast_length, largest_prime_factor

SIZES = [4096, 4095, 4097, 4099, 4104, 4116]

if __name__ == "__main__":
    warnings.simplefilter("ignore")  # the once-per-size slow-length warning is the subject here
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    native.available()
    retain_freed_memory()
    fns = {}
    for n in SIZES:
        x, g, layer = torch.randn(256, n), torch.randn(256, n), ACDC(n)
        xr = x.clone().requires_grad_()
        fns[f"rfft {n}"] = lambda x=x: torch.fft.rfft(x)

        def fb(layer=layer, xr=xr, g=g):
            layer.zero_grad(set_to_none=True)
            xr.grad = None
            layer(xr).backward(g)
        fns[f"f+b {n}"] = fb
    ms = interleaved_ms(fns, repeats=15)
    info = machine()
    print(f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}; B = 256, fp32, median ms")
    print("| n | largest prime factor | next fast length | rfft ms | x n=4096 | ACDC f+b ms | x n=4096 |")
    print("|---|---|---|---|---|---|---|")
    for n in SIZES:
        print(f"| {n} | {largest_prime_factor(n)} | {fast_length(n)} | {ms[f'rfft {n}']:.2f} | "
              f"{ms[f'rfft {n}'] / ms['rfft 4096']:.2f} | {ms[f'f+b {n}']:.2f} | {ms[f'f+b {n}'] / ms['f+b 4096']:.2f} |")
