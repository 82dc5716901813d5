"""AFDF vs ACDC vs a textbook complex FFT layer: times and saved bytes (docs/afdf_and_compat.md).

Run: python benchmarks/bench_afdf.py THREADS
"""
import statistics, sys, time
import torch
from torch_acdc import acdc, afdf

torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
B = 256


def textbook(x, a, d):  # Re(ifft(d * fft(a * x))) on complex tensors, plain autograd
    return torch.fft.ifft(torch.view_as_complex(d) * torch.fft.fft(torch.view_as_complex(a) * x)).real


def saved_mib(f, *args):
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t, lambda t: t):
        f(*args)
    return sum(sizes) / 2**20


print("| n | threads | rfft | afdf fwd | afdf fwd+bwd | textbook fwd | textbook fwd+bwd | acdc fwd+bwd | saved MiB afdf / textbook |")
print("|---|---|---|---|---|---|---|---|---|")
for n in (1024, 4096):
    x = torch.randn(B, n, requires_grad=True)
    a, d = torch.randn(n, 2, requires_grad=True), torch.randn(n, 2, requires_grad=True)
    ar, dr = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)

    def fb(f, *args):
        def step():
            for t in args:
                t.grad = None
            f(*args).sum().backward()
        return step

    def fwd(f, *args):
        def step():
            with torch.no_grad():
                f(*args)
        return step

    fns = [lambda: torch.fft.rfft(x.detach()), fwd(afdf, x, a, d), fb(afdf, x, a, d), fwd(textbook, x, a, d),
           fb(textbook, x, a, d), fb(acdc, x, ar, dr)]
    times = [[] for _ in fns]
    for f in fns:
        f(), f()
    for _ in range(40):  # interleaved, so every column sees the same machine load
        for t, f in zip(times, fns):
            s = time.perf_counter()
            f()
            t.append((time.perf_counter() - s) * 1e3)
    med = " | ".join(f"{statistics.median(t):.2f}" for t in times)
    print(f"| {n} | {torch.get_num_threads()} | {med} | {saved_mib(afdf, x, a, d):.1f} / {saved_mib(textbook, x, a, d):.1f} |")
