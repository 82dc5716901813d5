"""Side-by-side timing and memory of nn.Linear, ACDC, StackedACDC, a Monarch peer and the FFT floor, one run.

All figures of one row come from the same process, interleaved, so their ratios are meaningful on a noisy
machine. Times are medians over ``repeats`` calls after warm-up. Peak memory is the largest amount of
memory allocated (activations, gradients, temporaries) at any point of one forward+backward, measured with
the PyTorch profiler's memory timeline (on CUDA: ``torch.cuda.max_memory_allocated``). Forward+backward is
``layer(x).backward(g)`` with a fixed g; fresh-memory page faults are included (as in real training).
"ACDC torch" is the same layer on the pure-torch path (``TORCH_ACDC_NATIVE=0``), timed in the same loop.
The profiler's own C++ log lines (USDT profiler_start/stop, CPUAllocator warnings) are silenced.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import native
from .layers import ACDC, StackedACDC
from .markdown import format_table as markdown_table
from .progress import progress_bar

__all__ = ["BenchRow", "LEGEND", "Monarch", "forward_latency", "median_ms", "interleaved_times", "interleaved_ms", "peak_memory_mb", "bench_size", "run", "format_table",
           "batch_sweep", "format_sweep",
           "machine", "small_calls", "interleaved_blocks_ms", "lstm_steps", "format_small_calls", "format_lstm"]


@dataclass
class BenchRow:
    n: int
    batch: int
    rfft_ms: float
    linear_fwd_ms: float
    linear_fb_ms: float
    acdc_fwd_ms: float
    acdc_fb_ms: float
    acdc_torch_fwd_ms: float
    acdc_torch_fb_ms: float
    monarch_fwd_ms: float
    monarch_fb_ms: float
    stack_fwd_ms: float
    stack_fb_ms: float
    linear_peak_mb: float
    acdc_peak_mb: float
    stack_peak_mb: float
    stack_depth: int

    # ratio name -> (numerator, denominator, denominator multiple): "X / ACDC f+b" > 1 means ACDC is faster
    RATIOS = {"acdc_fb_over_5rfft": ("acdc_fb_ms", "rfft_ms", 5), "acdc_fwd_over_rfft": ("acdc_fwd_ms", "rfft_ms", 1),
              "acdc_fb_over_fwd": ("acdc_fb_ms", "acdc_fwd_ms", 1), "linear_over_acdc_fb": ("linear_fb_ms", "acdc_fb_ms", 1),
              "monarch_over_acdc_fb": ("monarch_fb_ms", "acdc_fb_ms", 1),
              "stack_over_acdc_fb": ("stack_fb_ms", "acdc_fb_ms", 1),
              "torch_over_native_fb": ("acdc_torch_fb_ms", "acdc_fb_ms", 1)}

    def ratio(self, name: str) -> float:
        """One of :attr:`RATIOS`, from this row's times."""
        num, den, multiple = self.RATIOS[name]
        return getattr(self, num) / (multiple * getattr(self, den))

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update({name: self.ratio(name) for name in self.RATIOS})
        return out


class Monarch(nn.Module):
    """A plain Monarch layer (a benchmark *peer*, not part of the library API): two block-diagonal batched
    matmuls with about sqrt(n) blocks and a transpose between, n = k * q. (B, n) -> (B, n), n (k + q) weights.
    """

    def __init__(self, n: int, device=None, dtype=None):
        super().__init__()
        k = 1 << (max(n, 1).bit_length() - 1) // 2
        while n % k:
            k //= 2
        self.k, self.q = k, n // k
        kw = {"device": device, "dtype": dtype}
        self.w1 = nn.Parameter(torch.randn(self.k, self.q, self.q, **kw) / self.q ** 0.5)
        self.w2 = nn.Parameter(torch.randn(self.q, self.k, self.k, **kw) / self.k ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = torch.bmm(x.reshape(b, self.k, self.q).transpose(0, 1), self.w1)  # (k, B, q)
        h = torch.bmm(h.permute(2, 1, 0), self.w2)  # (q, B, k)
        return h.permute(1, 2, 0).reshape(b, -1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, repeats: int = 20, warmup: int = 3, device: torch.device = torch.device("cpu")) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    return interleaved_ms({"f": fn}, repeats, warmup, device)["f"]


def interleaved_times(fns: dict, repeats: int = 20, warmup: int = 3, device: torch.device = torch.device("cpu"),
                      cpu: dict | None = None) -> dict[str, list[float]]:
    """Wall times (ms) of ``repeats`` calls of each ``fns[name]()``, measured round-robin (one call of each per
    round) so that load changes on a noisy machine hit all candidates alike and their ratios stay meaningful.
    ``cpu``, if given, receives the process CPU times (ms, all threads) of the same calls."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu_times[name].append((time.process_time() - cpu_start) * 1e3)
    if cpu is not None:
        cpu.update(cpu_times)
    return times


def interleaved_blocks_ms(fns: dict, rounds: int = 15, block: int = 20, device: torch.device = torch.device("cpu")) -> dict:
    """Median ms per call of each ``fns[name]()`` measured in interleaved *blocks*: each round runs ``block``
    calls of every function in turn, the first call of a block not counted. Load changes still hit all
    candidates alike, but each is timed with its own data in cache, as in a loop that calls the same layer
    again and again (one call of each in turn instead lets a large neighbour, e.g. a 64 MiB nn.Linear weight,
    evict the small layer's tables every time)."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            _sync(device)
            for _ in range(block):
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def interleaved_ms(fns: dict, repeats: int = 20, warmup: int = 3,
                   device: torch.device = torch.device("cpu")) -> dict:
    """Median wall time (ms) of each ``fns[name]()`` from :func:`interleaved_times`."""
    return {name: statistics.median(t) for name, t in interleaved_times(fns, repeats, warmup, device).items()}


def peak_memory_mb(fn, device: torch.device = torch.device("cpu")) -> float:
    """Peak MiB allocated while ``fn()`` runs (tensors allocated before the call are not counted)."""
    fn()  # warm-up: caches (e.g. DCT tables) are built outside the measurement
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with _quiet_fds(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                               with_stack=True) as prof:
        fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device)
    return max((sum(s) for s in sizes), default=0) / 2**20


@contextlib.contextmanager
def _quiet_fds():
    """Send the process's stdout/stderr file descriptors to /dev/null: the profiler logs from C++."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _on_path(fn, use_native):
    """fn run with the native path on/off (None: as configured)."""
    if use_native is None:
        return fn

    def step():
        with native.use_native(use_native):
            fn()
    return step


def _fwd_bwd(module: nn.Module, x: torch.Tensor, use_native=None):
    g = torch.randn_like(x)

    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).backward(g)
    return _on_path(step, use_native)


def _fwd(module: nn.Module, x: torch.Tensor, use_native=None):
    def step():
        with torch.no_grad():
            module(x)
    return _on_path(step, use_native)


def forward_latency(n: int = 1024, batch: int = 1, repeats: int = 200, device="cpu") -> dict:
    """Small-batch forward (no grad) of nn.Linear vs ACDC (native and torch path), median ms per call over
    ``repeats`` calls each, in interleaved blocks of 20 (:func:`interleaved_blocks_ms`)."""
    device = torch.device(device)
    x = torch.randn(batch, n, device=device)
    lin, layer = nn.Linear(n, n, device=device), ACDC(n, device=device)
    t = interleaved_blocks_ms({"linear_fwd_ms": _fwd(lin, x), "acdc_fwd_ms": _fwd(layer, x),
                               "acdc_torch_fwd_ms": _fwd(layer, x, False)}, max(3, repeats // 20), 20, device=device)
    return {"n": n, "batch": batch, **t, "linear_over_acdc": t["linear_fwd_ms"] / t["acdc_fwd_ms"]}


def machine() -> dict:
    """What a figure needs beside it to be reproduced: CPU model, cores, torch's threads, torch version."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        import platform

        cpu = platform.processor() or cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "native": native.status(), "fft_plans": native.fft_plans()}


def small_calls(sizes=(64, 1024, 4096), repeats: int = 300, device="cpu") -> list[dict]:
    """B = 1 forward without grad (one row at a time: serving, generation), nn.Linear vs ACDC per size,
    interleaved; each row also names the path the ACDC call took (:func:`torch_acdc.dispatch.explain`)."""
    from .dispatch import explain

    rows = []
    for n in sizes:
        row = forward_latency(n, 1, repeats, device)
        with torch.no_grad():
            decision = explain(ACDC(n, device=device), torch.randn(1, n, device=device))
        row["path"] = f"{decision.route}/{decision.kernel}"
        rows.append(row)
    return rows


def lstm_steps(input_size: int = 64, hidden: int = 1024, small: int = 256, seq: int = 32, batch: int = 16,
               repeats: int = 7, gen_repeats: int = 200) -> dict:
    """The recurrent workloads, interleaved: one training step (forward + backward over a (seq, batch)
    sequence) of ACDCLSTM(input, hidden), nn.LSTM(input, small) and nn.LSTM(input, hidden); and one generation
    step (batch 1, one time step with the state carried, no grad) of ACDCLSTM vs nn.LSTM of the same width.
    Times in ms (medians); a step's input is prepared outside the clock."""
    from .recurrent import ACDCLSTM

    models = {"acdc": ACDCLSTM(input_size, hidden), "dense_small": nn.LSTM(input_size, small),
              "dense": nn.LSTM(input_size, hidden)}
    x = torch.randn(seq, batch, input_size)

    def train(m):
        def step():
            m.zero_grad(set_to_none=True)
            out, _ = m(x)
            out.sum().backward()
        return step

    train_ms = interleaved_ms({f"train_{k}_ms": train(m) for k, m in models.items()}, repeats, warmup=2)
    token = torch.randn(1, 1, input_size)

    def generate(m):
        with torch.no_grad():
            _, state = m(token)

        def step():
            nonlocal state
            with torch.no_grad():
                _, state = m(token, state)
        return step

    gen_ms = interleaved_blocks_ms({"gen_acdc_ms": generate(models["acdc"]), "gen_dense_ms": generate(models["dense"])},
                                   max(3, gen_repeats // 20), 20)
    res = {"input_size": input_size, "hidden": hidden, "small": small, "seq": seq, "batch": batch,
           **train_ms, **gen_ms}
    res["train_acdc_over_dense_small"] = res["train_acdc_ms"] / res["train_dense_small_ms"]
    res["train_dense_over_acdc"] = res["train_dense_ms"] / res["train_acdc_ms"]
    res["gen_dense_over_acdc"] = res["gen_dense_ms"] / res["gen_acdc_ms"]
    return res


def format_small_calls(rows: list[dict]) -> str:
    return markdown_table([{"n": r["n"], "Linear us": round(r["linear_fwd_ms"] * 1e3, 1),
                          "ACDC us": round(r["acdc_fwd_ms"] * 1e3, 1),
                          "ACDC torch path us": round(r["acdc_torch_fwd_ms"] * 1e3, 1),
                          "ACDC / Linear": round(r["acdc_fwd_ms"] / r["linear_fwd_ms"], 2),
                          "Linear / ACDC": round(r["linear_over_acdc"], 2), "path": r["path"]} for r in rows])


def format_lstm(r: dict) -> str:
    h, s = r["hidden"], r["small"]
    return "\n".join([
        f"train step (T={r['seq']}, B={r['batch']}, input {r['input_size']}, forward+backward, ms): "
        f"ACDCLSTM-{h} {r['train_acdc_ms']:.1f}, nn.LSTM-{s} {r['train_dense_small_ms']:.1f}, "
        f"nn.LSTM-{h} {r['train_dense_ms']:.1f}",
        f"  ACDCLSTM-{h} / nn.LSTM-{s} = {r['train_acdc_over_dense_small']:.2f}; "
        f"nn.LSTM-{h} / ACDCLSTM-{h} = {r['train_dense_over_acdc']:.2f}",
        f"generation step (B=1, one step with state, no grad, ms): ACDCLSTM-{h} {r['gen_acdc_ms']:.3f}, "
        f"nn.LSTM-{h} {r['gen_dense_ms']:.3f}; nn.LSTM / ACDCLSTM = {r['gen_dense_over_acdc']:.2f}"])


def bench_size(n: int, batch: int = 256, depth: int = 4, repeats: int = 20, device="cpu",
               dtype=torch.float32, memory: bool = True) -> BenchRow:
    """Time and measure the three layers and the rfft floor at one size."""
    device = torch.device(device)
    kw = {"device": device, "dtype": dtype}
    x = torch.randn(batch, n, **kw, requires_grad=True)
    models = {"linear": nn.Linear(n, n, **kw), "acdc": ACDC(n, **kw),
              "stack": StackedACDC(n, n, depth, **kw), "monarch": Monarch(n, **kw)}
    xd = x.detach()
    fns = {"rfft_ms": lambda: torch.fft.rfft(xd)}
    for name, m in models.items():
        fns[f"{name}_fwd_ms"] = _fwd(m, x)
        fns[f"{name}_fb_ms"] = _fwd_bwd(m, x)
    fns["acdc_torch_fwd_ms"] = _fwd(models["acdc"], x, use_native=False)
    fns["acdc_torch_fb_ms"] = _fwd_bwd(models["acdc"], x, use_native=False)
    res = interleaved_ms(fns, repeats, device=device)
    for name in ("linear", "acdc", "stack"):
        res[f"{name}_peak_mb"] = peak_memory_mb(_fwd_bwd(models[name], x), device) if memory else float("nan")
    return BenchRow(n=n, batch=batch, stack_depth=depth, **res)


def batch_sweep(sizes=(1024, 4096), batches=(1, 8, 64, 256, 1024, 4096), repeats: int = 10, device="cpu",
                progress: bool = True) -> list[dict]:
    """nn.Linear vs ACDC forward and forward+backward times over batch sizes (interleaved, one run).

    Speedups are given from the medians and from the fastest call of each (``*_speedup_min``): on a shared
    machine the two differ, and a large gap says the figure is not stable."""
    device = torch.device(device)
    rows = []
    for n, b in progress_bar([(n, b) for n in sizes for b in batches], desc="batch sweep", enabled=progress):
        x = torch.randn(b, n, device=device, requires_grad=True)
        lin, acdc = nn.Linear(n, n, device=device), ACDC(n, device=device)
        raw = interleaved_times({"linear_fwd_ms": _fwd(lin, x), "acdc_fwd_ms": _fwd(acdc, x),
                                 "linear_fb_ms": _fwd_bwd(lin, x), "acdc_fb_ms": _fwd_bwd(acdc, x)}, repeats,
                                device=device)
        t = {name: statistics.median(v) for name, v in raw.items()}
        fastest = {name: min(v) for name, v in raw.items()}  # the least-disturbed call: more stable under load
        rows.append({"n": n, "batch": b, **t, "fwd_speedup": t["linear_fwd_ms"] / t["acdc_fwd_ms"],
                     "fb_speedup": t["linear_fb_ms"] / t["acdc_fb_ms"],
                     "fwd_speedup_min": fastest["linear_fwd_ms"] / fastest["acdc_fwd_ms"],
                     "fb_speedup_min": fastest["linear_fb_ms"] / fastest["acdc_fb_ms"]})
    return rows


def format_sweep(rows: list[dict]) -> str:
    """Markdown table of :func:`batch_sweep` rows; speedup > 1 means ACDC is faster (median-based, then min-based)."""
    lines = ["| n | B | Linear fwd | ACDC fwd | fwd speedup (median / min) | Linear f+b | ACDC f+b "
             "| f+b speedup (median / min) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['batch']} | {r['linear_fwd_ms']:.3f} | {r['acdc_fwd_ms']:.3f} "
                     f"| {r['fwd_speedup']:.1f}x / {r['fwd_speedup_min']:.1f}x | {r['linear_fb_ms']:.3f} "
                     f"| {r['acdc_fb_ms']:.3f} | {r['fb_speedup']:.1f}x / {r['fb_speedup_min']:.1f}x |")
    return "\n".join(lines)


def run(sizes=(512, 1024, 2048, 4096, 8192, 16384), batch: int = 256, depth: int = 4, repeats: int = 20,
        device="cpu", memory: bool = True, progress: bool = True) -> list[BenchRow]:
    return [bench_size(n, batch, depth, repeats, device, memory=memory)
            for n in progress_bar(sizes, desc="bench", enabled=progress)]


LEGEND = ("Legend: ms = median milliseconds per call; fwd = forward, f+b = layer(x).backward(g); rfft = torch.fft.rfft "
          "of the same tensor (the FFT floor); ACDC torch = the same layer on the pure-torch path; Monarch = a plain "
          "two-bmm Monarch layer with sqrt(n) blocks (a peer for comparison, not part of torch_acdc); Stack(d) = "
          "StackedACDC of depth d; ACDC f+b / 5 rfft = f+b over five rffts (1 = at the FFT floor); "
          "X / ACDC f+b > 1 means ACDC is faster than X; peak MiB = most memory allocated during one f+b.")


def format_table(rows: list[BenchRow]) -> str:
    """Two Markdown tables of the rows: times (ms) and peak memory (MiB), then the ratios."""
    head = ("| n | B | rfft | Linear fwd | Linear f+b | ACDC fwd | ACDC f+b | ACDC torch fwd | ACDC torch f+b "
            "| Monarch fwd | Monarch f+b | Stack(d) fwd | Stack(d) f+b | peak MiB Linear / ACDC / Stack |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r.n} | {r.batch} | {r.rfft_ms:.2f} | {r.linear_fwd_ms:.2f} | {r.linear_fb_ms:.2f} "
            f"| {r.acdc_fwd_ms:.2f} | {r.acdc_fb_ms:.2f} | {r.acdc_torch_fwd_ms:.2f} | {r.acdc_torch_fb_ms:.2f} "
            f"| {r.monarch_fwd_ms:.2f} | {r.monarch_fb_ms:.2f} | {r.stack_fwd_ms:.2f} ({r.stack_depth}) "
            f"| {r.stack_fb_ms:.2f} | {r.linear_peak_mb:.1f} / {r.acdc_peak_mb:.1f} / {r.stack_peak_mb:.1f} |")
    lines += ["", "| n | ACDC f+b / 5 rfft | ACDC fwd / rfft | ACDC f+b / fwd | Linear / ACDC f+b "
              "| Monarch / ACDC f+b | Stack(d) / ACDC f+b | torch path / native f+b |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r.n} | " + " | ".join(f"{r.ratio(k):.2f}" for k in BenchRow.RATIOS) + " |")
    return "\n".join(lines)
