"""Character-level LSTM language model: dense nn.LSTM vs ACDCLSTM, validation bits per character."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..experiments import charlm as lib
from ..experiments import equal_compute as ec
from ..experiments import protocol
from ..experiments.common import format_table, make_run_dir, run_title, write_json
from ..training import distributed
from .grid import add_job_flags, run_comparison
from .common import (
    ACTIVATION_CHOICES,
    PERMUTATION_CHOICES,
    UsageError,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)

DESCRIPTION = lib.__doc__
FAST = {"hidden": 32, "embed": 16, "batch": 8, "bptt": 32, "steps": 40, "val_every": 20,
        "checkpoint_every": 20, "max_chars": 30000, "sample": 80}
FULL = {name: getattr(lib.CharLMConfig, name) for name in FAST}  # full mode: the CharLMConfig defaults
FAST_HELP = "tiny model and text for smoke tests (explicit flags win)"


THREADS, DEVICE, TIMES = None, "auto", True  # --threads / --device (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = lib.CharLMConfig()
    p.add_argument("--data", default=None, help="UTF-8 text file (default: Python's bundled pydoc topics text)")
    p.add_argument("--max-chars", type=positive_int, default=None, help="use only the first N characters")
    p.add_argument("--val-fraction", type=fraction, default=d.val_fraction, help="held-out tail of the text")
    p.add_argument("--model", choices=lib.MODELS, default=d.model)
    p.add_argument("--hidden", type=positive_int, default=None, help="LSTM hidden size")
    p.add_argument("--params", type=positive_int, default=None,
                   help="pick the hidden size whose total parameter count is closest to N (overrides --hidden)")
    p.add_argument("--embed", type=positive_int, default=None, help="embedding size")
    p.add_argument("--layers", type=positive_int, default=d.layers)
    p.add_argument("--depth", type=positive_int, default=d.depth, help="ACDC layers per gate transform (--model acdc)")
    p.add_argument("--permutation", default=d.permutation, choices=PERMUTATION_CHOICES, type=lambda s: None if s == "none" else s,
                   help="between ACDC layers: random | riffle | none")
    p.add_argument("--dropout", type=unit_interval, default=d.dropout, help="between LSTM layers")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="parallel streams, global over all processes")
    p.add_argument("--bptt", type=positive_int, default=None, help="characters per step")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr-mult", type=positive_float, default=None,
                   help="lr multiplier for ACDC diagonals A and D (default: the paper's x24 / x12; 1 disables)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d.weight_decay,
                   help="not applied to ACDC diagonals")
    p.add_argument("--clip", type=nonnegative_float, default=d.clip, help="gradient-norm clip (0: none)")
    p.add_argument("--val-every", type=positive_int, default=None, help="steps between validations")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="steps between checkpoints")
    p.add_argument("--keep", type=positive_int, default=d.keep,
                   help="checkpoints kept (>= 2 keeps the previous good one)")
    p.add_argument("--resume", action="store_true", help="continue from the newest readable checkpoint in --out")
    p.add_argument("--sample", type=nonnegative_int, default=None, help="characters to generate at the end")
    p.add_argument("--temperature", type=positive_float, default=d.temperature, help="sampling temperature")
    p.add_argument("--compare", action="store_true",
                   help="train dense and acdc at equal hidden size and at equal parameter count")
    p.add_argument("--time-budget", type=positive_float, default=None, help="stop after N seconds of training steps")
    p.add_argument("--val-max-chars", type=positive_int, default=None, help="validate on the first N held-out chars")
    g = p.add_argument_group("--sweep: families compared at equal measured compute (torch_acdc.experiments."
                             "equal_compute); defaults below are --sweep's, with --fast its smoke values")
    g.add_argument("--sweep", action="store_true", help="timing pass, every job of the grid, then the merged table")
    g.add_argument("--families", nargs="+", default=None, help=f"MODEL:WIDTH (default {' '.join(ec.FULL['families'])};"
                                                               f" --fast {' '.join(ec.FAST['families'])})")
    g.add_argument("--budgets", type=positive_float, nargs="+", default=None,
                   help=f"seconds of measured training compute per model (default {ec.FULL['budgets']})")
    g.add_argument("--lrs", type=float, nargs="+", default=None,
                   help=f"one learning-rate grid for every family (default per kind: {ec.LR_GRIDS}); each family picks its "
                        "best on validation")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seeds (default {ec.FULL['seeds']})")
    g.add_argument("--val-chars", type=positive_int, default=None,
                   help=f"validation characters, choose the LR (default {ec.FULL['val_chars']})")
    g.add_argument("--test-chars", type=positive_int, default=None,
                   help=f"test characters after them, reported (default {ec.FULL['test_chars']})")
    add_job_flags(g)


def config_from_args(args: argparse.Namespace) -> lib.CharLMConfig:
    """The run's CharLMConfig from the parsed flags (the --fast / FULL presets already filled in by main)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(lib.CharLMConfig) if hasattr(args, f.name)}
    values["data"] = args.data or lib.BUILTIN_CORPUS
    return lib.CharLMConfig(**values)


def run(args: argparse.Namespace) -> int:
    if args.sweep:
        return run_sweep(args)
    cfg = config_from_args(args)
    with distributed(args.device) as ctx:
        out = make_run_dir(args.out, "charlm", args.resume, args.overwrite, can_resume=True) if ctx.is_main else None
        out = Path(ctx.broadcast_object(str(out) if out else None))
        progress = not args.no_progress
        if args.compare:
            if args.params:
                raise UsageError("--compare sizes the models itself; drop --params")
            results = lib.compare_charlm(cfg, out, ctx, args.resume, progress, args.overwrite)
        else:
            if args.params:
                vocab = len(lib.load_corpus(cfg.data, cfg.val_fraction, cfg.max_chars).vocab)
                cfg = dataclasses.replace(
                    cfg, hidden=lib.hidden_for_params(args.params, **lib._model_kwargs(cfg, vocab)))
            results = [lib.train_charlm(cfg, out, ctx, args.resume, progress, f"{cfg.model}-h{cfg.hidden}", args.overwrite)]
        if ctx.is_main:
            title = run_title("character LM: bits per character", data=cfg.data,
                              protocol=f"{cfg.steps} steps, {cfg.batch} streams x {cfg.bptt} chars",
                              seeds=cfg.seed, fast=args.fast)
            for r in results:  # the library's per-run plots, re-drawn with the run's title
                lib.plot_curves([r], (out / r["label"] if args.compare else out) / "curves.png", title)
            if args.compare:
                write_json(out / "results.json", {"runs": results})
                lib.plot_curves(results, out / "curves.png", title)
            for r in results:
                if r.get("sample"):
                    print(f"--- sample from {r['label']} (temperature {cfg.temperature}) ---\n{r['sample']}\n---")
            print(f"{ctx.world_size} process(es), torch {torch.__version__}, {torch.get_num_threads()} threads, "
                  f"text {cfg.data}: {results[0]['train_chars']} train / {results[0]['val_chars']} val chars")
            print(format_table(lib.summary_rows(results)))
            print(f"results: {out / 'results.json'}")
    return 0


SWEEP_BASE = {"data": "stdlib", "batch": 16, "bptt": 32, "embed": 32, "checkpoint_every": 100, "sample": 0}
SWEEP_BASE_FAST = {**SWEEP_BASE, "max_chars": 420000, "batch": 8, "embed": 16, "checkpoint_every": 50}


def sweep_protocol(args: argparse.Namespace) -> tuple[ec.CharLMComparison, protocol.Grid]:
    """The comparison and its grid from the flags (--fast / FULL presets of the sweep; explicit flags win);
    ValueError naming a bad family, budget, LR, seed or a corpus too small for the splits."""
    preset = ec.FAST if args.fast else ec.FULL
    base_values = dict(SWEEP_BASE_FAST if args.fast else SWEEP_BASE)
    base_values["data"] = args.data or lib.STDLIB_CORPUS
    for name in ("max_chars", "embed", "batch", "bptt", "checkpoint_every"):
        if getattr(args, name, None) is not None and name not in getattr(args, "_preset_filled", ()):
            base_values[name] = getattr(args, name)
    base = dataclasses.replace(lib.CharLMConfig(), depth=args.depth, permutation=args.permutation, clip=args.clip,
                               lr_mult=args.lr_mult, weight_decay=args.weight_decay, keep=args.keep, **base_values)
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else preset[name]  # noqa: E731
    grid = ec.make_grid(list(pick("families")), pick("budgets"), preset["lrs"] if args.lrs is None else list(args.lrs),
                        list(pick("seeds")), preset["timing_rounds"], preset["timing_warmup"])
    protocol.check_grid(grid)
    exp = ec.CharLMComparison(base, pick("val_chars"), pick("test_chars"))
    exp.check()
    return exp, grid


def run_sweep(args: argparse.Namespace) -> int:
    """``acdc charlm --sweep``: timing pass, the grid's jobs (all, or ``--job K``), and the merge."""
    exp, grid = sweep_protocol(args)
    run_comparison(args, exp, grid, "charlm --sweep")
    return 0
