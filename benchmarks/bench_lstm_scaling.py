"""Benchmark script: same as ``acdc lstm-bench`` (see ``--help``). Run: python benchmarks/bench_lstm_scaling.py"""
import sys

from torch_acdc.cli import main

if __name__ == "__main__":
    sys.exit(main(["lstm-bench", *sys.argv[1:]]))
