"""Build the native CPU kernels now (ahead of first use) and report where they are and how long it took.

Compiles ``csrc/cpu/*.cpp`` with the system C++ compiler into the build cache (``$TORCH_ACDC_BUILD_DIR``, default
``~/.cache/torch_acdc``), verified by size and SHA-256 before it is ever loaded. Run it once after installing
(the README's set-up does); a later first use then loads the cached library at once. A cached, verified
library is reused (0 s). Exit status 1 if the kernels cannot be built (the library then runs on its
pure-torch path).
"""
from __future__ import annotations

import argparse
import sys
import time

FAST_HELP = "(no effect: the build is the same)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="also run one ACDC layer on the native path and on the "
                                                         "pure-torch path and compare them")


def run(args: argparse.Namespace) -> int:
    from .. import native

    start = time.perf_counter()
    path = native.build(announce=lambda message: print(message, file=sys.stderr, flush=True))
    seconds = native.build_seconds()
    took = f"built in {seconds:.1f} s" if seconds is not None else "already built (verified cache)"
    print(f"native kernels: {took}; {native.status()} ({time.perf_counter() - start:.1f} s in all)")
    if args.check:
        import torch

        from .. import ACDC

        layer, x = ACDC(64, dtype=torch.float64), torch.randn(8, 64, dtype=torch.float64)
        with torch.no_grad():
            fast = layer(x)
            with native.use_native(False):
                ref = layer(x)
        err = (fast - ref).abs().max().item()
        print(f"check: native vs pure-torch path, max abs difference {err:.2e} (float64)")
        if err > 1e-10:
            raise RuntimeError(f"the native kernels disagree with the pure-torch path ({err:.2e})")
    print(f"library: {path}")
    return 0
