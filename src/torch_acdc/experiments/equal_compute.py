"""Is ACDC the better choice at my budget? The character-level LM under the comparison protocol.

Families are ``MODEL:WIDTH`` (``dense:256``, ``acdc:1024``): a one-layer CharLM of that LSTM width, every other
setting from ``base``. The protocol itself - interleaved timing pass, budgets of measured compute turned into
step counts, an LR grid per family chosen on validation, seeds, jobs and merge - is
:mod:`torch_acdc.experiments.protocol`; this module supplies the char-LM's training step, its jobs (resumable
:func:`~torch_acdc.experiments.charlm.train_charlm` runs scored after each budget's step count on the
validation split - which chooses the LR - and on the test split after it, which is reported) and its rows.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import protocol
from .charlm import CharLMConfig, build_training, count_parameters, load_corpus, train_charlm, train_step, _model_kwargs
from ..training import DistContext, StreamBatches

__all__ = ["CharLMComparison", "LR_GRIDS", "FULL", "FAST", "make_grid", "per_step_table", "parse_family"]

# Presets (explicit flags win). Budgets are seconds of measured training compute per model. Learning-rate grids
# per model kind (the ACDC diagonals' rate is multiplied by the paper's x24 / x12 on top: torch_acdc.recipe).
LR_GRIDS = {"dense": [3e-4, 1e-3, 3e-3, 1e-2], "acdc": [3e-4, 1e-3, 3e-3, 1e-2]}
FULL = {"families": ["dense:256", "dense:1024", "acdc:1024"], "budgets": [20.0, 40.0, 80.0], "lrs": LR_GRIDS,
        "seeds": [0, 1], "val_chars": 65536, "test_chars": 65536, "timing_rounds": 12, "timing_warmup": 4}
FAST = {"families": ["dense:32", "acdc:128"], "budgets": [2.0, 4.0, 8.0],
        "lrs": {"dense": [3e-3, 1e-2, 3e-2], "acdc": [3e-3, 1e-2, 3e-2]},
        "seeds": [0, 1], "val_chars": 32768, "test_chars": 8192, "timing_rounds": 6, "timing_warmup": 2}


def parse_family(name: str) -> tuple[str, int]:
    """``'acdc:1024'`` -> ('acdc', 1024); ValueError naming the expected form otherwise."""
    parts = name.split(":")
    if len(parts) != 2 or parts[0] not in ("dense", "acdc") or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"family {name!r}: expected MODEL:WIDTH with MODEL dense or acdc, e.g. acdc:1024")
    return parts[0], int(parts[1])


def make_grid(families: list[str], budgets: list[float], lrs: dict | list, seeds: list[int], timing_rounds: int,
              timing_warmup: int) -> protocol.Grid:
    """The grid, each family's LR grid taken from ``lrs`` (per kind: {'dense': [...], 'acdc': [...]}, or one list
    for all); the family names are checked first."""
    kinds = {f: parse_family(f)[0] for f in families}
    per_family = {f: list(lrs if isinstance(lrs, list) else lrs[kinds[f]]) for f in families}
    return protocol.Grid(list(families), [float(b) for b in budgets], per_family, list(seeds), timing_rounds,
                         timing_warmup)


class CharLMComparison(protocol.Experiment):
    """Families of CharLMs on one corpus: validation BPC chooses the LR, test BPC is reported."""

    name = "charlm"
    val_metric = "val BPC"
    higher_is_better = False
    test_metrics = ("test BPC",)

    def __init__(self, base: CharLMConfig, val_chars: int, test_chars: int):
        self.base, self.val_chars, self.test_chars = base, val_chars, test_chars
        self._corpus = None

    def check(self) -> None:
        """The corpus holds the validation and test splits (ValueError otherwise)."""
        self.corpus()

    def corpus(self):
        """The corpus with its validation and test splits (read once)."""
        if self._corpus is None:
            b = self.base
            self._corpus = load_corpus(b.data, b.val_fraction, b.max_chars, self.val_chars, self.test_chars)
        return self._corpus

    def settings(self) -> dict:
        return {"base": dataclasses.asdict(self.base), "val_chars": self.val_chars, "test_chars": self.test_chars}

    def config(self, family: str, lr: float, seed: int, steps: int, val_at=None) -> CharLMConfig:
        model, hidden = parse_family(family)
        return dataclasses.replace(self.base, model=model, hidden=hidden, lr=lr, seed=seed, steps=steps,
                                   val_at=tuple(val_at) if val_at else None, val_max_chars=self.val_chars,
                                   test_chars=self.test_chars, time_budget=None, val_every=10**9, val_pow2=False,
                                   sample=0)

    def step_functions(self, grid: protocol.Grid) -> dict:
        ctx, corpus = DistContext(), self.corpus()
        steps = {}
        for family in grid.families:
            cfg = self.config(family, grid.grid(family)[0], grid.seeds[0], steps=1)
            model, net, opt = build_training(cfg, len(corpus.vocab), ctx)
            batches = StreamBatches(corpus.train, cfg.batch, cfg.bptt, cfg.seed, 0, 1)
            box = {"step": 0, "hidden": None}

            def step(cfg=cfg, model=model, net=net, opt=opt, batches=batches, box=box):
                _, hidden = train_step(net, model, opt, batches.batch(box["step"]), box["hidden"], cfg, ctx)
                box["hidden"] = tuple(s.detach() for s in hidden)
                box["step"] += 1
            steps[family] = step
        return steps

    def train(self, family, lr, seed, counts, run_dir: Path, progress: bool) -> dict:
        cfg = self.config(family, lr, seed, steps=counts[-1], val_at=counts)
        result = train_charlm(cfg, run_dir, resume=True, progress=progress, label=protocol.job_name(family, lr, seed))
        h = result["history"]
        at = {s: i for i, s in enumerate(h["val_step"])}
        return {"config": json.loads(json.dumps(dataclasses.asdict(cfg))),
                "points": [{"step": s, "val": h["val_bpc"][at[s]], "test BPC": h["test_bpc"][at[s]]} for s in counts]}

    def describe(self, family: str) -> dict:
        vocab = len(self.corpus().vocab)  # the whole (truncated) text's characters, splits or not
        total, lstm = count_parameters(**_model_kwargs(self.config(family, 1e-3, 0, 1), vocab))
        return {"params": total, "LSTM params": lstm}


def per_step_table(out: Path, steps: list[int], window: int = 50, lrs: list[float] | None = None) -> list[dict]:
    """Quality at equal *steps* (not compute) from a sweep's jobs: for each family and step, the training BPC
    (mean over the ``window`` steps up to it, then over seeds) at the LR that is best at that step. Every job of
    a seed reads the same chunks in the same order (``StreamBatches`` is seeded by the seed), so this compares
    the families per step on the same data; a family whose jobs stop earlier has no entry past its last step."""
    runs: dict[tuple[str, float], list[list[float]]] = {}
    for path in sorted((Path(out) / "jobs").glob("*/results.json")):
        r = json.loads(path.read_text())
        cfg, h = r["config"], r["history"]
        if lrs is not None and cfg["lr"] not in lrs:
            continue
        runs.setdefault((f"{cfg['model']}:{cfg['hidden']}", cfg["lr"]), []).append(h["train_bpc"])
    rows = []
    for family in sorted({f for f, _ in runs}):
        row = {"family": family}
        for s in steps:
            best = None
            for (f, lr), curves in runs.items():
                if f != family or any(len(c) < s for c in curves):
                    continue
                value = sum(sum(c[max(0, s - window):s]) / len(c[max(0, s - window):s]) for c in curves) / len(curves)
                if best is None or value < best[0]:
                    best = (value, lr)
            row[f"step {s}"] = "" if best is None else f"{best[0]:.3f} (lr {best[1]:g})"
        rows.append(row)
    return rows
