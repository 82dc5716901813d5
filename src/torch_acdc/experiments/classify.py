"""Classify handwritten digits with a dense MLP, an ACDC-only network and an ACDC stack + small dense head.

Data (see :mod:`torch_acdc.experiments.digits_data`): scikit-learn's bundled 8x8 digits by default, MNIST from
local IDX files with ``--data-dir``. Models (see the ``build_*`` functions):

* ``dense``: Linear(in, hidden) -> ReLU -> Linear(hidden, 10).
* ``acdc-only``: the input zero-padded to ``width``, a StackedACDC of ``depth`` layers (``activation`` between
  layers), keep the first 10 outputs. No dense layer anywhere.
* ``acdc-head``: StackedACDC(in -> width, ReLU between layers) -> ReLU -> Linear(width, 10).

Training (:func:`train_classifier`): Adam on :func:`torch_acdc.recipe.param_groups` (no weight decay on the
ACDC diagonals and the paper's x24 / x12 learning rates for A / D unless ``--lr-mult 1``), cross-entropy,
shuffled mini-batches. Reported: test accuracy (mean +- std over seeds), parameters, multiply-adds and FLOPs
per example from :mod:`torch_acdc.cost`.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ..cost import model_cost
from ..layers import StackedACDC
from ..recipe import param_groups
from .common import format_table, make_run_dir, new_figure, save_figure, seed_everything, write_json
from .digits_data import load_mnist, load_sklearn_digits

__all__ = ["Truncate", "build_dense_mlp", "build_acdc_only", "build_acdc_head", "build_model", "MODELS",
           "TrainResult", "train_classifier", "evaluate", "add_arguments", "run"]

MODELS = ("dense", "acdc-only", "acdc-head")


class Truncate(nn.Module):
    """Keep the first ``features`` entries of the last dimension: (..., n) -> (..., features). No parameters."""

    def __init__(self, features: int):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.features:
            raise ValueError(f"Truncate expected at least {self.features} features, got shape {tuple(x.shape)}")
        return x[..., : self.features]

    def extra_repr(self) -> str:
        return f"features={self.features}"


def build_dense_mlp(in_features: int, num_classes: int, hidden: int) -> nn.Module:
    """Linear(in, hidden) -> ReLU -> Linear(hidden, num_classes)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def build_acdc_only(in_features: int, num_classes: int, depth: int, width: int | None = None,
                    activation: str | None = "relu", permutation="random") -> nn.Module:
    """StackedACDC(in -> width) (input zero-padded to width >= in) then keep the first ``num_classes``
    outputs: no dense layer. 3 * depth * width parameters."""
    width = max(width or in_features, in_features, num_classes)
    return nn.Sequential(StackedACDC(in_features, width, depth, permutation=permutation, activation=activation),
                         Truncate(num_classes))


def build_acdc_head(in_features: int, num_classes: int, depth: int, width: int | None = None,
                    activation: str | None = "relu", permutation="random") -> nn.Module:
    """StackedACDC(in -> width) -> ReLU -> Linear(width, num_classes): a structured body and a small dense head."""
    width = max(width or in_features, in_features)
    return nn.Sequential(StackedACDC(in_features, width, depth, permutation=permutation, activation=activation),
                         nn.ReLU(), nn.Linear(width, num_classes))


def build_model(name: str, in_features: int, num_classes: int, args: argparse.Namespace) -> nn.Module:
    """The model called ``name`` (one of MODELS), configured from the CLI arguments (hidden, depth, width,
    activation)."""
    if name == "dense":
        return build_dense_mlp(in_features, num_classes, args.hidden)
    activation = None if args.activation == "none" else args.activation
    if name == "acdc-only":
        return build_acdc_only(in_features, num_classes, args.depth, args.width, activation)
    if name == "acdc-head":
        return build_acdc_head(in_features, num_classes, args.depth, args.width, activation)
    raise ValueError(f"unknown model {name!r}: expected one of {MODELS}")


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data`` in eval mode."""
    model.eval()
    loss = correct = 0.0
    for x, y in DataLoader(data, batch_size=batch_size):
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
    return loss / len(data), correct / len(data)


@dataclass
class TrainResult:
    """``history``: one dict per epoch (epoch, train_loss, test_loss, test_accuracy); final test accuracy."""

    history: list[dict] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]


def train_classifier(model: nn.Module, train_data: TensorDataset, test_data: TensorDataset, *, epochs: int,
                     batch_size: int, lr: float, weight_decay: float = 0.0,
                     lr_multipliers: dict[str, float] | None = None, seed: int = 0, progress: bool = False,
                     desc: str | None = None) -> TrainResult:
    """Train ``model`` with Adam on ``param_groups(model, lr, weight_decay, lr_multipliers)`` and cross-entropy.

    Shuffling uses a generator seeded with ``seed``; the test set is evaluated after every epoch.
    """
    opt = torch.optim.Adam(param_groups(model, lr, weight_decay, lr_multipliers))
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    result = TrainResult()
    bar = tqdm(total=epochs * len(loader), desc=desc, disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            bar.update()
        test_loss, test_acc = evaluate(model, test_data)
        result.history.append({"epoch": epoch, "train_loss": total / len(train_data), "test_loss": test_loss,
                               "test_accuracy": test_acc})
        bar.set_postfix(acc=f"{test_acc:.3f}", refresh=False)
    bar.close()
    return result


# ------------------------------------------------------------------------------------------------ the command

FAST = {"epochs": 5, "seeds": 1, "depth": 4}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder with MNIST IDX files (default: sklearn digits)")
    p.add_argument("--limit-train", type=int, default=None, help="MNIST: use the first N training images")
    p.add_argument("--limit-test", type=int, default=None, help="MNIST: use the first N test images")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-mult", type=float, default=None,
                   help="learning-rate multiplier for both ACDC diagonals (default: the paper's x24 A, x12 D)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="for dense weights and biases only")
    p.add_argument("--depth", type=int, default=16, help="ACDC layers in the structured models")
    p.add_argument("--width", type=int, default=None, help="ACDC width (input zero-padded; default: input size)")
    p.add_argument("--activation", default="relu", help="between ACDC layers: relu, tanh, ... or none")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the dense MLP")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fast", action="store_true", help=f"quick smoke run: {FAST}")
    p.add_argument("--out", default=None, help="run folder (default runs/classify-<time>)")
    p.add_argument("--no-progress", action="store_true")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def _plot(curves: dict[str, list[list[float]]], path) -> None:
    fig, ax = new_figure(figsize=(6, 4))
    for name, runs in curves.items():
        epochs = range(1, len(runs[0]) + 1)
        mean = [statistics.fmean(v) for v in zip(*runs)]
        ax.plot(epochs, mean, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    if args.fast:
        for key, value in FAST.items():
            setattr(args, key, value)
    data = (load_mnist(args.data_dir, args.limit_train, args.limit_test) if args.data_dir
            else load_sklearn_digits(seed=0))
    mult = None if args.lr_mult is None else {"A": args.lr_mult, "D": args.lr_mult}
    out = make_run_dir(args.out, "classify")
    print(data.describe())
    rows, curves, runs = [], {}, {}
    for name in args.models:
        accs = []
        for seed in range(args.seeds):
            seed_everything(seed)
            model = build_model(name, data.in_features, data.num_classes, args)
            res = train_classifier(model, data.train, data.test, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, weight_decay=args.weight_decay, lr_multipliers=mult, seed=seed,
                                   progress=not args.no_progress, desc=f"{name} seed {seed}")
            accs.append(res.test_accuracy)
            curves.setdefault(name, []).append([h["test_accuracy"] for h in res.history])
            runs.setdefault(name, []).append(res.history)
        cost = model_cost(model, (1, data.in_features)).total
        mean, std = _mean_std(accs)
        rows.append({"model": name, "test_accuracy": mean, "test_accuracy_std": std, "accuracies": accs,
                     "params": cost.params, "mult_adds": cost.mult_adds, "flops": cost.flops,
                     "architecture": repr(model)})
    _plot(curves, out / "accuracy.png")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    write_json(out / "results.json", {"experiment": "classify", "dataset": data.name, "config": config,
                                      "train_size": len(data.train), "test_size": len(data.test),
                                      "cost_units": "per example; mult_adds = real multiply-adds, flops = 2 x",
                                      "rows": rows, "histories": runs})
    table = [{"model": r["model"], "test accuracy": f"{r['test_accuracy']:.4f} ± {r['test_accuracy_std']:.4f}",
              "params": r["params"], "mult-adds": int(r["mult_adds"]), "FLOPs": int(r["flops"])} for r in rows]
    print(format_table(table))
    print(f"results: {out / 'results.json'}, plot: {out / 'accuracy.png'}")
    return 0
