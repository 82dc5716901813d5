"""The workloads of the speed issue, with only APIs every version has, so the same script times an older
checkout (``PYTHONPATH=<old>/src python benchmarks/before_after.py``) and this one: B = 1 forward without grad
(ACDC vs nn.Linear, n = 64 / 1024 / 4096), an ACDCLSTM(64, 1024) training step (T = 32, B = 16) against
nn.LSTM(64, 256) and nn.LSTM(64, 1024), a generation step (B = 1, state carried, no grad), and B = 256
forward+backward of ACDC against five rffts (n = 1024 / 4096 / 8192). Each group is interleaved in one
process (medians); fresh-memory page faults are excluded (glibc keeps freed memory, as the acdc commands do).
Versions are compared run against run, so compare the ratios, not the milliseconds.

    python benchmarks/before_after.py [threads]
"""
import ctypes
import statistics
import sys
import time

import torch
from torch import nn

import torch_acdc
from torch_acdc import ACDC, ACDCLSTM


def interleaved(fns: dict, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(threads: int) -> None:
    torch.set_num_threads(threads)
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 2**20), libc.mallopt(-1, 2**30)  # keep freed memory (as the acdc commands do)
    print(f"torch_acdc from {torch_acdc.__file__}, {threads} threads")
    with torch.no_grad():
        fns = {}
        for n in (64, 1024, 4096):
            x, lin, layer = torch.randn(1, n), nn.Linear(n, n), ACDC(n)
            fns[f"linear {n}"] = lambda lin=lin, x=x: lin(x)
            fns[f"acdc {n}"] = lambda layer=layer, x=x: layer(x)
        ms = interleaved(fns, 300, warmup=20)
    for n in (64, 1024, 4096):
        print(f"B=1 fwd n={n}: Linear {ms[f'linear {n}'] * 1e3:.1f} us, ACDC {ms[f'acdc {n}'] * 1e3:.1f} us, "
              f"ACDC / Linear {ms[f'acdc {n}'] / ms[f'linear {n}']:.2f}")
    x = torch.randn(32, 16, 64)
    models = {"acdc": ACDCLSTM(64, 1024), "dense256": nn.LSTM(64, 256), "dense1024": nn.LSTM(64, 1024)}

    def train(m):
        def f():
            m.zero_grad(set_to_none=True)
            m(x)[0].sum().backward()
        return f
    ms = interleaved({k: train(m) for k, m in models.items()}, 7, warmup=2)
    print(f"LSTM train step: ACDCLSTM-1024 {ms['acdc']:.1f} ms, nn.LSTM-256 {ms['dense256']:.1f} ms, "
          f"nn.LSTM-1024 {ms['dense1024']:.1f} ms; ACDC / dense-256 {ms['acdc'] / ms['dense256']:.2f}, "
          f"dense-1024 / ACDC {ms['dense1024'] / ms['acdc']:.2f}")
    token = torch.randn(1, 1, 64)

    def gen(m):
        with torch.no_grad():
            state = m(token)[1]

        def f():
            nonlocal state
            with torch.no_grad():
                state = m(token, state)[1]
        return f
    ms = interleaved({"acdc": gen(models["acdc"]), "dense": gen(models["dense1024"])}, 200, warmup=10)
    print(f"generation step: ACDCLSTM-1024 {ms['acdc']:.3f} ms, nn.LSTM-1024 {ms['dense']:.3f} ms, "
          f"dense / ACDC {ms['dense'] / ms['acdc']:.2f}")
    for n in (1024, 4096, 8192):
        xr, g, layer = torch.randn(256, n, requires_grad=True), torch.randn(256, n), ACDC(n)
        xd = xr.detach()

        def fb():
            layer.zero_grad(set_to_none=True)
            xr.grad = None
            layer(xr).backward(g)
        ms = interleaved({"fb": fb, "rfft": lambda: torch.fft.rfft(xd)}, 15)
        print(f"B=256 n={n}: ACDC f+b {ms['fb']:.2f} ms, rfft {ms['rfft']:.2f} ms, f+b / 5 rfft "
              f"{ms['fb'] / (5 * ms['rfft']):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
