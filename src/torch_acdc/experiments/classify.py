"""Classify handwritten digits with a dense MLP, an ACDC-only network and an ACDC stack + small dense head.

Data (see :mod:`torch_acdc.experiments.digits_data`): scikit-learn's bundled 8x8 digits by default, MNIST from
local IDX files with ``--data-dir``. Models (see the ``build_*`` functions):

* ``dense``: Linear(in, hidden) -> ReLU -> Linear(hidden, 10).
* ``acdc-only``: the input zero-padded to ``width``, a StackedACDC of ``depth`` layers (``activation`` between
  layers), keep the first 10 outputs. No dense layer anywhere.
* ``acdc-head``: StackedACDC(in -> width, ReLU between layers) -> ReLU -> Linear(width, 10).

Training (:func:`train_classifier`): Adam on :func:`torch_acdc.recipe.param_groups` (no weight decay on the
ACDC diagonals and the paper's x24 / x12 learning rates for A / D unless ``--lr-mult 1``), cross-entropy,
shuffled mini-batches (:class:`torch_acdc.training.ShardedBatches`: the batch order is a pure function of
(seed, step)). Runs unchanged under ``torchrun --nproc_per_node=N`` (DDP, the global batch split over the
processes); every ``--checkpoint-every`` steps each (model, seed) run writes an atomic checkpoint into
``<out>/checkpoints/<model>-seed<seed>/`` and ``--resume`` continues from the newest readable one. Only rank 0
writes results and prints. Reported: test accuracy (mean +- std over seeds), parameters, multiply-adds and
FLOPs per example from :mod:`torch_acdc.cost`. This trains every model for the same epochs (a recipe check);

``--sweep`` compares the models under the comparison protocol (:class:`ClassifyComparison`,
:mod:`torch_acdc.experiments.protocol`): equal measured compute, an LR grid per model chosen on a validation
part of the training set, >= 2 seeds, test accuracy reported with its range.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..layers import StackedACDC
from ..recipe import param_groups
from ..training import CheckpointError, CheckpointManager, DistContext, ShardedBatches, TrainState
from . import protocol
from .common import integer_axis, line_style, new_figure, save_figure, set_title
from ..progress import progress_bar

__all__ = ["Truncate", "build_dense_mlp", "build_acdc_only", "build_acdc_head", "build_model", "MODELS",
           "TrainResult", "train_step", "train_classifier", "evaluate", "mean_std", "plot_accuracy",
           "split_validation", "ClassifyComparison", "LR_GRID"]

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
def evaluate(model: nn.Module, data: TensorDataset, batch_size: int = 1024,
             ctx: DistContext | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` (unwrapped, on ``ctx.device``) on ``data`` in eval mode.

    Distributed: each rank scores a contiguous ``1/W`` of ``data`` and the sums are all-reduced, so every rank
    returns the same numbers (collective: call it on every rank).
    """
    ctx = ctx or DistContext()
    model.eval()
    rows = torch.arange(len(data)).tensor_split(ctx.world_size)[ctx.rank]
    sums = torch.zeros(2, dtype=torch.float64)  # (loss sum, correct)
    for x, y in DataLoader(torch.utils.data.Subset(data, rows.tolist()), batch_size=batch_size):
        logits = model(x.to(ctx.device))
        y = y.to(ctx.device)
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        sums[1] += (logits.argmax(-1) == y).sum().item()
    loss, correct = ctx.all_reduce_sum(sums.to(ctx.device)).tolist()
    return loss / len(data), correct / len(data)


@dataclass
class TrainResult:
    """``history``: one dict per epoch (epoch, train_loss, test_loss, test_accuracy); final test accuracy;
    ``resumed_from_step``: the checkpoint step training continued from (None for a fresh run);
    ``step_ms``: median wall time of one optimizer step (forward, backward, update) over the steps this
    process ran (evaluation and checkpoints excluded; None if it ran none); ``points``: one dict per step of
    ``score_at`` (step, val_loss, val_accuracy, test_loss, test_accuracy)."""

    history: list[dict] = field(default_factory=list)
    resumed_from_step: int | None = None
    step_ms: float | None = None
    points: list[dict] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]


@dataclass
class _Progress:
    """What a run carries from step to step (and in its checkpoints) besides model, optimizer and RNG."""

    step: int = 0
    epoch_loss_sum: float = 0.0  # sum of this epoch's per-step mean training losses so far
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    points: list[dict] = field(default_factory=list)


def _fingerprint(model: nn.Module, train_data: TensorDataset, **settings) -> dict:
    """What a checkpoint must share with the run resuming it: architecture, training data and settings."""
    digest = hashlib.sha256()
    for t in train_data.tensors:
        digest.update(t.cpu().contiguous().numpy().tobytes())
    return {"architecture": repr(model), "train_sha256": digest.hexdigest(), **settings}


def _resume(state: TrainState, fingerprint: dict, total_steps: int, desc: str | None) -> _Progress:
    """The progress stored in the newest readable checkpoint (model, optimizer and RNG restored), after checking
    it was written by this configuration; a fresh start when there is none."""
    r = state.begin(resume=True, require_extra=("fingerprint", "history", "epoch_loss_sum"))
    if r is None:
        return _Progress()
    saved = r.extra["fingerprint"]
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in fingerprint.items() if saved.get(k) != v]
    if diff:
        raise CheckpointError(r.path, "was written by a different run configuration (" + "; ".join(diff) + ")")
    if r.step > total_steps:
        raise ValueError(f"{total_steps} training steps end before the checkpoint's step {r.step} ({r.path})")
    if state.ctx.is_main:
        print(f"{desc or 'classify'}: resuming after step {r.step} from {r.path}")
    return _Progress(r.step, r.extra["epoch_loss_sum"], r.extra["history"], r.step, r.extra.get("points", []))


def train_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step of cross-entropy on (x, y): forward, backward, update; the loss (detached). The same
    function is timed by the comparison protocol's timing pass."""
    net.train()
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train_classifier(model: nn.Module, train_data: TensorDataset, test_data: TensorDataset, *, epochs: int,
                     batch_size: int, lr: float, weight_decay: float = 0.0,
                     lr_multipliers: dict[str, float] | None = None, seed: int = 0, progress: bool = False,
                     desc: str | None = None, ctx: DistContext | None = None,
                     checkpoints: CheckpointManager | None = None, checkpoint_every: int = 100,
                     resume: bool = False, overwrite: bool = False, steps: int | None = None,
                     score_at=(), val_data: TensorDataset | None = None) -> TrainResult:
    """Train ``model`` with Adam on ``param_groups(model, lr, weight_decay, lr_multipliers)`` and cross-entropy.

    Step ``s`` uses global batch ``s`` of ``ShardedBatches(len(train_data), batch_size, seed)`` (epoch-seeded
    permutations, incomplete last batch dropped); under DDP (``ctx`` distributed) each rank takes its
    contiguous share and gradients are averaged, so any number of processes follows the one-process
    trajectory up to float rounding. The test set is evaluated after every epoch. With ``checkpoints``, a
    :class:`~torch_acdc.training.TrainState` (model, optimizer, every rank's RNG, step, history) is saved
    every ``checkpoint_every`` steps and after the last; ``resume`` continues from the newest readable one
    (``epochs`` may be raised to extend a finished run); a fresh run refuses a checkpoint directory holding
    another run's checkpoints (:class:`~torch_acdc.training.RunFolderError`) unless ``overwrite``. Collective
    when distributed: call on every rank.
    """
    ctx = ctx or DistContext()
    model.to(ctx.device)
    net = ctx.wrap(model)
    opt = torch.optim.Adam(param_groups(model, lr, weight_decay, lr_multipliers))
    x_train, y_train = train_data.tensors
    batches = ShardedBatches(len(train_data), batch_size, seed, ctx.rank, ctx.world_size)
    per_epoch = batches.steps_per_epoch
    total_steps = steps if steps is not None else epochs * per_epoch
    score_at = set(score_at)
    state = fingerprint = None
    if checkpoints is not None:
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every!r}")
        state = TrainState(checkpoints, ctx, model=model, optimizer=opt)
        fingerprint = _fingerprint(model, train_data, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   lr_multipliers=lr_multipliers, seed=seed, score_at=sorted(score_at))
    run = _Progress()
    if state is not None:
        run = _resume(state, fingerprint, total_steps, desc) if resume else _Progress()
        if not resume:
            state.begin(resume=False, overwrite=overwrite)

    bar = progress_bar(total=total_steps, initial=run.step, desc=desc, enabled=(progress and ctx.is_main),
               leave=False)
    step_times = []
    for step in range(run.step, total_steps):
        started = time.perf_counter()
        idx = batches.indices(step)
        loss = train_step(net, opt, x_train[idx].to(ctx.device), y_train[idx].to(ctx.device))
        step_times.append(time.perf_counter() - started)
        run.epoch_loss_sum += ctx.all_reduce_sum(loss).item() / ctx.world_size
        run.step = step + 1
        bar.update()
        if run.step % per_epoch == 0:
            test_loss, test_acc = evaluate(model, test_data, ctx=ctx)
            run.history.append({"epoch": run.step // per_epoch, "train_loss": run.epoch_loss_sum / per_epoch,
                                "test_loss": test_loss, "test_accuracy": test_acc})
            run.epoch_loss_sum = 0.0
            bar.set_postfix(acc=f"{test_acc:.3f}", refresh=False)
        if run.step in score_at:
            val = evaluate(model, val_data, ctx=ctx) if val_data is not None else (math.nan, math.nan)
            test = evaluate(model, test_data, ctx=ctx)
            run.points.append({"step": run.step, "val_loss": val[0], "val_accuracy": val[1], "test_loss": test[0],
                               "test_accuracy": test[1]})
        if state is not None and (run.step % checkpoint_every == 0 or run.step == total_steps):
            state.save(run.step, extra={"fingerprint": fingerprint, "history": run.history,
                                        "epoch_loss_sum": run.epoch_loss_sum, "points": run.points})
    bar.close()
    return TrainResult(run.history, run.resumed_from,
                       statistics.median(step_times) * 1e3 if step_times else None, run.points)


# ------------------------------------------------------------------------------------------------ reporting
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def plot_accuracy(curves: dict[str, list[list[float]]], path, title: str | None = None) -> None:
    """Mean test accuracy (over seeds) after each epoch, one curve per model."""
    fig, ax = new_figure(figsize=(6, 4.4))
    set_title(fig, title)
    for i, (name, runs) in enumerate(curves.items()):
        epochs = range(1, len(runs[0]) + 1)
        mean = [statistics.fmean(v) for v in zip(*runs)]
        ax.plot(epochs, mean, label=name, **line_style(i, len(mean)))
    integer_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------ comparison
LR_GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def split_validation(data: TensorDataset, fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, validation): a seeded random ``fraction`` of ``data`` held out to choose learning rates."""
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = len(data) - max(1, round(fraction * len(data)))
    x, y = data.tensors
    return TensorDataset(x[order[:cut]], y[order[:cut]]), TensorDataset(x[order[cut:]], y[order[cut:]])


class ClassifyComparison(protocol.Experiment):
    """The classifier families (dense MLP, ACDC-only, ACDC + dense head) under the comparison protocol
    (:mod:`torch_acdc.experiments.protocol`): validation accuracy (a held-out part of the training set) chooses
    the LR, test accuracy is reported. ``settings``: data name, architecture flags (hidden, depth, width,
    activation), batch size, LR multiplier, weight decay, validation fraction, checkpoint interval."""

    name = "classify"
    val_metric = "val accuracy"
    higher_is_better = True
    test_metrics = ("test accuracy",)

    def __init__(self, data, settings: dict):
        self.data, self.config = data, dict(settings)
        self.train_set, self.val_set = split_validation(data.train, self.config["val_fraction"], 0)

    def settings(self) -> dict:
        return {"dataset": self.data.name, "train": len(self.train_set), "val": len(self.val_set),
                "test": len(self.data.test), **self.config}

    def model(self, family: str, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(family, self.data.in_features, self.data.num_classes, argparse.Namespace(**self.config))

    def _mult(self):
        m = self.config.get("lr_mult")
        return None if m is None else {"A": m, "D": m}

    def step_functions(self, grid) -> dict:
        steps = {}
        x, y = self.train_set.tensors
        for family in grid.families:
            model = self.model(family, grid.seeds[0])
            opt = torch.optim.Adam(param_groups(model, grid.grid(family)[0], self.config["weight_decay"], self._mult()))
            batches = ShardedBatches(len(self.train_set), self.config["batch_size"], grid.seeds[0])
            box = {"step": 0}

            def step(model=model, opt=opt, batches=batches, box=box):
                idx = batches.indices(box["step"])
                train_step(model, opt, x[idx], y[idx])
                box["step"] += 1
            steps[family] = step
        return steps

    def train(self, family, lr, seed, counts, run_dir, progress: bool) -> dict:
        model = self.model(family, seed)
        res = train_classifier(model, self.train_set, self.data.test, epochs=1, steps=counts[-1], score_at=counts,
                               val_data=self.val_set, batch_size=self.config["batch_size"], lr=lr,
                               weight_decay=self.config["weight_decay"], lr_multipliers=self._mult(), seed=seed,
                               progress=progress, desc=protocol.job_name(family, lr, seed),
                               checkpoints=CheckpointManager(run_dir / "checkpoints", keep=2),
                               checkpoint_every=self.config["checkpoint_every"], resume=True)
        return {"points": [{"step": p["step"], "val": p["val_accuracy"], "test accuracy": p["test_accuracy"],
                            "test loss": p["test_loss"]} for p in res.points]}

    def describe(self, family: str) -> dict:
        from ..cost import model_cost

        cost = model_cost(self.model(family, 0), (1, self.data.in_features)).total
        return {"params": cost.params, "mult-adds": int(cost.mult_adds)}

    def baselines(self) -> list[dict]:
        """The majority class's test accuracy (the floor a classifier must beat)."""
        labels = self.data.test.tensors[1]
        return [{"variant": "majority class", "test accuracy": round(float((labels == labels.mode().values).float().mean()), 4)}]

    def plot(self, record: dict, out) -> list:
        return [protocol.plot_against_compute(record, self, out / "equal_compute.png")]
