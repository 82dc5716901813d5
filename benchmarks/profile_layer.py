"""Where one forward+backward of a layer spends its time: torch.profiler, self CPU time per op.

    python benchmarks/profile_layer.py [n] [acdc|stack] [steps]      (defaults 4096 acdc 10)

B = 256, fp32, 2 threads, x requiring grad, ``layer(x).backward(g)`` after 5 warm-up steps. On the native
path ``torch_acdc_native::acdc_forward`` / ``acdc_backward``'s self time is the fused passes; the FFTs show as
``aten::_fft_r2c`` / ``aten::_fft_c2r``.
"""
import sys

import torch
from torch.profiler import profile

from torch_acdc import ACDC, StackedACDC


def main(n=4096, kind="acdc", steps=10):
    torch.set_num_threads(2)
    x, g = torch.randn(256, n, requires_grad=True), torch.randn(256, n)
    layer = StackedACDC(n, n, 4) if kind == "stack" else ACDC(n)
    for _ in range(5):
        layer(x).backward(g)
    with profile() as prof:
        for _ in range(steps):
            layer(x).backward(g)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 4096, args[1] if len(args) > 1 else "acdc", int(args[2]) if len(args) > 2 else 10)
