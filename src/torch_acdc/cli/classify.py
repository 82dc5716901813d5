"""Classify handwritten digits: a dense MLP, an ACDC-only network and an ACDC stack + small dense head."""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from ..cost import model_cost
from ..experiments import classify as lib
from ..experiments.common import format_table, make_run_dir, run_title, seed_everything, write_json
from ..experiments.digits_data import load_mnist, load_sklearn_digits
from ..experiments import protocol
from ..training import CheckpointManager, distributed
from .common import (ACTIVATION_CHOICES, PERMUTATION_CHOICES, UsageError, fraction, nonnegative_float,
                     positive_float, positive_int)
from .grid import add_job_flags, run_comparison

DESCRIPTION = lib.__doc__
FAST = {"epochs": 5, "seeds": 1, "depth": 4, "budgets": [0.25, 0.5, 1.0]}
FULL = {"epochs": 40, "seeds": 3, "depth": 16, "budgets": [2.0, 4.0, 8.0]}
FAST_HELP = "quick smoke run (explicit flags win)"


THREADS, DEVICE, TIMES = None, "auto", True  # --threads / --device (cli.common), the busy-machine hint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder with MNIST IDX files (default: sklearn digits)")
    p.add_argument("--limit-train", type=positive_int, default=None, help="MNIST: use the first N training images")
    p.add_argument("--limit-test", type=positive_int, default=None, help="MNIST: use the first N test images")
    p.add_argument("--models", nargs="+", choices=lib.MODELS, default=list(lib.MODELS))
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--lr-mult", type=positive_float, default=None,
                   help="learning-rate multiplier for both ACDC diagonals (default: the paper's x24 A, x12 D)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.0, help="for dense weights and biases only")
    p.add_argument("--depth", type=positive_int, default=None, help="ACDC layers in the structured models")
    p.add_argument("--width", type=positive_int, default=None,
                   help="ACDC width (input zero-padded; default: input size)")
    p.add_argument("--activation", default="relu", choices=ACTIVATION_CHOICES, help="between ACDC layers")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden units of the dense MLP")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds --seed .. --seed + N - 1")
    p.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="optimizer steps between checkpoints of each (model, seed) run (the last step always)")
    p.add_argument("--keep", type=positive_int, default=2,
                   help="checkpoints kept per run (>= 2 keeps the previous good one)")
    p.add_argument("--resume", action="store_true",
                   help="continue every run from its newest readable checkpoint in --out/checkpoints")
    g = p.add_argument_group("--sweep: the families compared at equal measured compute "
                             "(torch_acdc.experiments.protocol); seeds --seed .. --seed + max(2, --seeds) - 1")
    g.add_argument("--sweep", action="store_true",
                   help="timing pass, every (model, lr, seed) job, then the table chosen on validation accuracy")
    g.add_argument("--budgets", type=positive_float, nargs="+", default=None,
                   help="seconds of measured training compute per model")
    g.add_argument("--lrs", type=positive_float, nargs="+", default=None,
                   help=f"learning-rate grid of every model (default {lib.LR_GRID})")
    g.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="part of the training set held out to choose the learning rate")
    add_job_flags(g)


def _load(args: argparse.Namespace):
    return (load_mnist(args.data_dir, args.limit_train, args.limit_test) if args.data_dir
            else load_sklearn_digits(seed=0))


def run_sweep(args: argparse.Namespace) -> int:
    """``acdc classify --sweep``: the models at equal measured compute, each at its best LR on validation."""
    if args.resume:
        raise UsageError("--sweep continues its jobs by itself; drop --resume")
    seeds = list(range(args.seed, args.seed + max(2, args.seeds)))
    lrs = list(args.lrs or lib.LR_GRID)
    fast = bool(args.fast)
    grid = protocol.Grid(list(args.models), list(args.budgets), {m: lrs for m in args.models}, seeds,
                         timing_rounds=10 if fast else 30, timing_warmup=3 if fast else 10)
    protocol.check_grid(grid)
    data = _load(args)
    settings = {"hidden": args.hidden, "depth": args.depth, "width": args.width, "activation": args.activation,
                "batch_size": args.batch_size, "lr_mult": args.lr_mult, "weight_decay": args.weight_decay,
                "val_fraction": args.val_fraction, "checkpoint_every": args.checkpoint_every}
    run_comparison(args, lib.ClassifyComparison(data, settings), grid, "classify --sweep")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.sweep:
        return run_sweep(args)
    data = _load(args)
    mult = None if args.lr_mult is None else {"A": args.lr_mult, "D": args.lr_mult}
    with distributed(args.device) as ctx:
        out = make_run_dir(args.out, "classify", args.resume, args.overwrite, can_resume=True) if ctx.is_main else None
        out = Path(ctx.broadcast_object(str(out) if out else None))
        if ctx.is_main:
            print(data.describe())
        rows, curves, runs, resumed = [], {}, {}, {}
        for name in args.models:
            accs, step_ms = [], []
            for seed in range(args.seed, args.seed + args.seeds):
                seed_everything(seed)  # the same initial model on every rank
                model = lib.build_model(name, data.in_features, data.num_classes, args)
                label = f"{name}-seed{seed}"
                res = lib.train_classifier(
                    model, data.train, data.test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    weight_decay=args.weight_decay, lr_multipliers=mult, seed=seed, progress=not args.no_progress,
                    desc=f"{name} seed {seed}", ctx=ctx,
                    checkpoints=CheckpointManager(out / "checkpoints" / label, keep=args.keep),
                    checkpoint_every=args.checkpoint_every, resume=args.resume,
                    overwrite=args.overwrite)
                accs.append(res.test_accuracy)
                step_ms.append(res.step_ms)
                curves.setdefault(name, []).append([h["test_accuracy"] for h in res.history])
                runs.setdefault(name, []).append(res.history)
                resumed[label] = res.resumed_from_step
            cost = model_cost(model, (1, data.in_features)).total
            mean, std = lib.mean_std(accs)
            rows.append({"model": name, "test_accuracy": mean, "test_accuracy_std": std, "accuracies": accs,
                         "params": cost.params, "mult_adds": cost.mult_adds, "flops": cost.flops,
                         "step_ms": _median_or_none(step_ms), "architecture": repr(model)})
        if not ctx.is_main:
            return 0
        title = run_title("classify: test accuracy (mean over seeds)", data=data.name,
                          protocol=f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}",
                          seeds=range(args.seed, args.seed + args.seeds), fast=args.fast)
        lib.plot_accuracy(curves, out / "accuracy.png", title)
        config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        write_json(out / "results.json", {"experiment": "classify", "dataset": data.name, "config": config,
                                          "train_size": len(data.train), "test_size": len(data.test),
                                          "cost_units": "per example; mult_adds = real multiply-adds, flops = 2 x",
                                          "world_size": ctx.world_size, "resumed_from_step": resumed,
                                          "rows": rows, "histories": runs})
        table = [{"model": r["model"], "test accuracy": f"{r['test_accuracy']:.4f} ± {r['test_accuracy_std']:.4f}",
                  "params": r["params"], "mult-adds": int(r["mult_adds"]), "FLOPs": int(r["flops"]),
                  "ms/step": "-" if r["step_ms"] is None else f"{r['step_ms']:.2f}"} for r in rows]
        print(f"{ctx.world_size} process(es), {torch.get_num_threads()} thread(s)")
        print(format_table(table))
        print(f"results: {out / 'results.json'}, plot: {out / 'accuracy.png'}")
    return 0


def _median_or_none(values):
    """Median over the seeds' step times (median ms per optimizer step); None if no seed ran a step here."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
