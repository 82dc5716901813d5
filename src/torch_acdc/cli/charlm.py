"""Character-level LSTM language model: dense nn.LSTM vs ACDCLSTM, validation bits per character."""
from __future__ import annotations

import argparse
import time
import dataclasses
from pathlib import Path

import torch

from ..experiments import charlm as lib
from ..experiments import charlm_sweep as sweep
from ..experiments.common import format_table, make_run_dir, run_title, write_json
from ..training import distributed
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
    g = p.add_argument_group("--sweep: dense and ACDC over hidden sizes at an equal wall-clock budget")
    g.add_argument("--sweep", action="store_true",
                   help=f"run the scaling sweep (defaults: {sweep.SWEEP_FULL}; with --fast {sweep.SWEEP_FAST})")
    g.add_argument("--acdc-hidden", type=positive_int, nargs="+", default=None, help="ACDC hidden sizes")
    g.add_argument("--dense-hidden", type=positive_int, nargs="+", default=None, help="dense hidden sizes")
    g.add_argument("--time-budget", type=positive_float, default=None, help="training seconds per model")
    g.add_argument("--val-max-chars", type=positive_int, default=None, help="validate on the first N held-out chars")


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


SWEEP_FLAGS = ("data", "max_chars", "val_fraction", "embed", "depth", "batch", "bptt", "steps", "lr", "seed",
               "checkpoint_every", "time_budget", "val_max_chars", "acdc_hidden", "dense_hidden")


def run_sweep(args: argparse.Namespace) -> int:
    """``acdc charlm --sweep``: every model of the sweep in its own process, then the table and figure."""
    # the sweep has its own presets: charlm's --fast/FULL values are not the user's choice
    given = {k: None if k in getattr(args, "_preset_filled", ()) else getattr(args, k) for k in SWEEP_FLAGS}
    given["seed"] = args.seed or None
    for k in ("val_fraction", "depth", "lr"):  # these flags have non-None defaults: keep only explicit changes
        if given[k] == getattr(lib.CharLMConfig, k):
            given[k] = None
    base, acdc, dense = sweep.sweep_base(sweep.SWEEP_FAST if args.fast else sweep.SWEEP_FULL, **given)
    configs = sweep.sweep_configs(base, acdc, dense)
    out = Path(args.out) if args.out else Path("runs") / f"charlm-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep.claim_sweep_dir(out, configs, args.overwrite)  # the same sweep continues; another one is refused
    results = sweep.run_sweep(configs, out, args.threads, not args.no_progress)
    title = (f"char LSTM on {base.data} (last {base.val_fraction:.0%} held out, first {base.val_max_chars} chars "
             f"validated), {base.time_budget:g} s training per model, batch {base.batch} x bptt {base.bptt}, "
             f"seed {base.seed}, threads {args.threads or torch.get_num_threads()}{', --fast' if args.fast else ''}")
    print(sweep.summarise(results, out, title))
    print(f"results: {out / 'results.json'}")
    return 0
