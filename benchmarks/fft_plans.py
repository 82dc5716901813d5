"""Kept FFT plans (MKL DFTI descriptors) vs torch's per-call FFT, inside the native ACDC kernels: B = 1 forward
(no grad) and B = 256 forward+backward, fp32, alternating blocks of calls with the plan cache on and off in
one process (the first call after each switch, which builds the plans, is not counted).

    python benchmarks/fft_plans.py [threads]
"""
import statistics
import sys
import time

import torch

from torch_acdc import ACDC, native
from torch_acdc.bench import machine
from torch_acdc.memory import retain_freed_memory


def _block(fn, calls: int) -> list[float]:
    fn()  # builds the plans after a switch: not counted
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main(threads: int = 2, rounds: int = 15) -> None:
    torch.set_num_threads(threads)
    assert native.available(), "native kernels could not be built"
    retain_freed_memory()
    cases = {}
    for n in (64, 1024, 4096):
        layer, x = ACDC(n), torch.randn(1, n)
        cases[f"B=1 fwd n={n}"] = (lambda layer=layer, x=x: layer(x), 50)
    for n in (1024, 4096):
        layer, x, g = ACDC(n), torch.randn(256, n, requires_grad=True), torch.randn(256, n)
        cases[f"B=256 f+b n={n}"] = (lambda layer=layer, x=x, g=g: layer(x).backward(g), 5)
    times = {name: {True: [], False: []} for name in cases}
    for _ in range(rounds):
        for keep in (True, False):
            native.fft_plans(keep)
            for name, (fn, calls) in cases.items():
                if name.startswith("B=1"):
                    with torch.no_grad():
                        times[name][keep] += _block(fn, calls)
                else:
                    times[name][keep] += _block(fn, calls)
    native.fft_plans(True)
    info = machine()
    print(f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}; median ms, {rounds} alternating rounds")
    print("| case | plans kept | torch FFT per call | torch / kept |")
    print("|---|---|---|---|")
    for name, t in times.items():
        on, off = statistics.median(t[True]), statistics.median(t[False])
        print(f"| {name} | {on:.4f} | {off:.4f} | {off / on:.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
