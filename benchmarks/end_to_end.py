"""End-to-end training-step time, native kernels vs the pure-torch path, in one interleaved run.

    python benchmarks/end_to_end.py [rounds]      (default 7)

The two workloads behind ``acdc classify`` and ``acdc lstm-bench``, built with the same library functions
and stepped the same way (fp32, 2 threads):

* classify: one Adam step (forward, cross-entropy, backward, update) of the ``acdc-only`` and ``acdc-head``
  models at the command's defaults (sklearn-digits shape: 64 features, 10 classes, depth 16, ReLU between
  layers, batch 32);
* lstm-bench: one SGD step of ``ACDCLSTM`` (depth 2, T = 16, B = 32, input size = hidden) at H = 1024 and 4096.

Like the ``acdc`` commands, it first calls ``retain_freed_memory()``. Each round runs every workload once with the native path and once with the torch path
(``native.use_native``), alternating, so machine noise hits both alike. Prints median ms per step and
torch / native (> 1: the native kernels are faster).
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from torch_acdc import native
from torch_acdc.memory import retain_freed_memory
from torch_acdc.experiments import classify, lstm_bench


def classify_step(name: str, batch: int = 32):
    model = (classify.build_acdc_only if name == "acdc-only" else classify.build_acdc_head)(64, 10, depth=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def lstm_step(hidden: int):
    model = lstm_bench.build("acdc", hidden, hidden, depth=2, permutation="random")
    x = torch.randn(16, 32, hidden)
    return lstm_bench.training_step(model, x, torch.optim.SGD(model.parameters(), lr=1e-3))


def main(rounds: int = 7):
    retain_freed_memory()  # as the acdc commands do
    torch.set_num_threads(2)
    torch.manual_seed(0)
    work = {"classify acdc-only": classify_step("acdc-only"), "classify acdc-head": classify_step("acdc-head"),
            "lstm ACDC H=1024": lstm_step(1024), "lstm ACDC H=4096": lstm_step(4096)}
    times = {(name, flag): [] for name in work for flag in (True, False)}
    for r in range(rounds + 1):  # round 0 is the warm-up
        for name, step in work.items():
            for flag in ((True, False) if r % 2 else (False, True)):
                with native.use_native(flag):
                    start = time.perf_counter()
                    step()
                    if r:
                        times[name, flag].append((time.perf_counter() - start) * 1e3)
    print("| workload | native ms/step | torch path ms/step | torch / native |")
    print("|---|---|---|---|")
    for name in work:
        nat, ref = statistics.median(times[name, True]), statistics.median(times[name, False])
        print(f"| {name} | {nat:.2f} | {ref:.2f} | {ref / nat:.2f} |")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
