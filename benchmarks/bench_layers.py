"""Benchmark script: same as ``acdc bench`` (see ``--help``). Run: python benchmarks/bench_layers.py"""
import sys

from torch_acdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
