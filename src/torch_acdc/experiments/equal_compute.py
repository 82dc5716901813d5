"""Is ACDC the better choice at my budget? The equal-compute protocol on the character-level LM.

Families (e.g. dense LSTM width 256, ACDC LSTM width 1024) are compared at equal *measured compute*, never at
equal wall-clock time shared with other work:

1. **Timing pass** (:func:`measure_step_costs`, one process, ``plan.json``): every family's training step is
   built, warmed up (native kernel build, FFT plans, allocator - all outside the clock), then timed
   interleaved (one step of each family per round, medians), so a noisy machine slows all alike.
2. **Equal compute**: each budget (seconds of training compute) becomes a step count per family:
   ``steps = round(budget / step cost)``. Every job trains to its family's largest step count and is
   validated (and tested) after each budget's step count: quality against time at every budget.
3. **Per-family learning rate**: a grid of learning rates per family (the recipe's diagonal multipliers on
   top); the best is chosen per family and budget on the *validation* split (mean over seeds), and the
   *test* split (the next held-out characters, never used to choose) is reported, with its spread over seeds.
4. **Jobs**: the grid (family x LR x seed) is a list of independent jobs, each a resumable training run
   (checkpoints) in ``jobs/<name>/``; :func:`merge` builds the table, the figures and ``results.json`` (which
   records the protocol: seeds, LR grid and the choice per family, validation / test sizes, step costs,
   CPU model, threads). ``acdc charlm --sweep`` runs plan + jobs + merge; ``--list-jobs`` prints one command
   per job (for several machines or a scheduler), ``--job K`` runs one, ``--merge`` merges.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .charlm import CharLMConfig, build_training, count_parameters, load_corpus, train_charlm, train_step, _model_kwargs
from .common import format_table, new_figure, save_figure, write_json
from ..training import DistContext, StreamBatches

__all__ = ["Protocol", "FULL", "FAST", "check_protocol", "jobs", "measure_step_costs", "make_plan", "run_job",
           "merge", "job_name", "claim_sweep_dir"]

# Presets (explicit flags win). Budgets are seconds of measured training compute per model.
# Learning-rate grids per model kind (the ACDC diagonals' rate is multiplied by the paper's x24 / x12 on top:
# torch_acdc.recipe). ``--lrs`` gives every family one grid instead.
LR_GRIDS = {"dense": [1e-3, 3e-3, 1e-2], "acdc": [1e-3, 3e-3, 1e-2]}
FULL = {"families": ["dense:256", "dense:1024", "acdc:1024"], "budgets": [20.0, 40.0, 80.0], "lrs": LR_GRIDS,
        "seeds": [0, 1], "val_chars": 65536, "test_chars": 65536, "timing_rounds": 12, "timing_warmup": 4}
FAST = {"families": ["dense:32", "acdc:128"], "budgets": [2.0, 4.0, 8.0], "lrs": LR_GRIDS,
        "seeds": [0, 1], "val_chars": 32768, "test_chars": 8192, "timing_rounds": 6, "timing_warmup": 2}


@dataclass
class Protocol:
    """The comparison: ``base`` (data, batch, bptt, embed, depth, ...) and the grid around it."""

    base: CharLMConfig
    families: list[str]
    budgets: list[float]
    lrs: dict  # model kind ("dense" / "acdc") -> learning-rate grid
    seeds: list[int]
    val_chars: int
    test_chars: int
    timing_rounds: int = 12
    timing_warmup: int = 4

    def grid(self, family: str) -> list[float]:
        return list(self.lrs[self.family(family)[0]])

    def family(self, name: str) -> tuple[str, int]:
        model, hidden = name.split(":")
        return model, int(hidden)

    def config(self, family: str, lr: float, seed: int, steps: int, val_at=None) -> CharLMConfig:
        model, hidden = self.family(family)
        return dataclasses.replace(self.base, model=model, hidden=hidden, lr=lr, seed=seed, steps=steps,
                                   val_at=tuple(val_at) if val_at else None, val_max_chars=self.val_chars,
                                   test_chars=self.test_chars, time_budget=None, val_every=10**9, val_pow2=False,
                                   sample=0)


def check_protocol(p: Protocol) -> None:
    """One ValueError naming the problem before any training: families, budgets, LRs, seeds, corpus size."""
    for f in p.families:
        parts = f.split(":")
        if len(parts) != 2 or parts[0] not in ("dense", "acdc") or not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"family {f!r}: expected MODEL:WIDTH with MODEL dense or acdc, e.g. acdc:1024")
    if len(set(p.families)) != len(p.families):
        raise ValueError(f"families {p.families} list one twice")
    if not p.budgets or any(b <= 0 for b in p.budgets) or len(set(p.budgets)) != len(p.budgets):
        raise ValueError(f"budgets must be distinct positive seconds, got {p.budgets}")
    for kind, grid in p.lrs.items():
        if len(grid) < 1 or any(not lr > 0 for lr in grid) or len(set(grid)) != len(grid):
            raise ValueError(f"the learning-rate grid must be distinct positive numbers, got {list(grid)} ({kind})")
    if not p.seeds or len(set(p.seeds)) != len(p.seeds) or any(s < 0 for s in p.seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {p.seeds}")
    load_corpus(p.base.data, p.base.val_fraction, p.base.max_chars, p.val_chars, p.test_chars)  # too small: raises


MANIFEST = "sweep.json"
_OUTPUTS = ("plan.json", "results.json", "summary.md", "equal_compute.png", MANIFEST)


def claim_sweep_dir(out: Path, p: Protocol, overwrite: bool = False) -> Path:
    """Make ``out`` this sweep's folder: one holding the *same* protocol (its ``sweep.json``) is continued
    (re-running the command resumes it); one holding another sweep or another run is refused
    (:class:`~torch_acdc.training.RunFolderError`) unless ``overwrite``, which removes that sweep's plan,
    jobs and outputs (nothing else). Locks the folder."""
    import shutil

    from ..training.runs import RunFolderError, holds_run, lock_dir

    manifest = _protocol_record(p)
    path = out / MANIFEST
    old = json.loads(path.read_text()) if path.is_file() else None
    if not _same_sweep(old, manifest) and (old is not None or holds_run(out) or (out / "jobs").exists()):
        if not overwrite:
            what = "another sweep (other settings)" if old is not None else "another run"
            raise RunFolderError(out, f"holds {what}; re-run that sweep's own command to continue it, replace it "
                                      "(--overwrite) or choose another folder")
        lock_dir(out)
        shutil.rmtree(out / "jobs", ignore_errors=True)
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
    lock_dir(out)
    write_json(path, manifest)
    return out


_GRID_KEYS = ("lrs", "seeds", "families")  # a sweep may change its grid: jobs are keyed by (family, lr, seed)


def _same_sweep(old: dict | None, new: dict) -> bool:
    """Whether ``old`` and ``new`` protocols describe the same sweep, possibly with other LR grids, seeds or a
    subset of its families (the finished jobs stay valid: each job's results record its full configuration;
    a family the timing pass did not measure is refused by :func:`make_plan`)."""
    if old is None:
        return False
    strip = lambda r: {k: v for k, v in r.items() if k not in _GRID_KEYS}  # noqa: E731
    return strip(old) == strip(new)


def job_name(family: str, lr: float, seed: int) -> str:
    return f"{family.replace(':', '-h')}-lr{lr:g}-s{seed}"


def jobs(p: Protocol) -> list[tuple[str, float, int]]:
    """(family, lr, seed) of every job, in a fixed order (``--job K`` indexes it)."""
    return [(f, lr, s) for f in p.families for lr in p.grid(f) for s in p.seeds]


def measure_step_costs(p: Protocol, progress: bool = False) -> dict:
    """Median ms per training step of each family, measured interleaved in this process after warm-up."""
    import time

    ctx = DistContext()
    corpus = load_corpus(p.base.data, p.base.val_fraction, p.base.max_chars, p.val_chars, p.test_chars)
    runs = {}
    for family in p.families:
        cfg = p.config(family, p.grid(family)[0], p.seeds[0], steps=1)
        model, net, opt = build_training(cfg, len(corpus.vocab), ctx)
        batches = StreamBatches(corpus.train, cfg.batch, cfg.bptt, cfg.seed, 0, 1)
        runs[family] = {"cfg": cfg, "model": model, "net": net, "opt": opt, "batches": batches, "hidden": None,
                        "step": 0, "times": []}

    def one(r) -> float:
        chunk = r["batches"].batch(r["step"])
        tic = time.perf_counter()
        _, hidden = train_step(r["net"], r["model"], r["opt"], chunk, r["hidden"], r["cfg"], ctx)
        r["hidden"] = tuple(s.detach() for s in hidden)
        elapsed = time.perf_counter() - tic
        r["step"] += 1
        return elapsed

    for _ in range(p.timing_warmup):  # native build, FFT plans, allocator: outside every clock
        for r in runs.values():
            one(r)
    for _ in range(p.timing_rounds):
        for r in runs.values():
            r["times"].append(one(r) * 1e3)
    return {f: statistics.median(r["times"]) for f, r in runs.items()}


def make_plan(p: Protocol, out: Path) -> dict:
    """The timing pass and the step counts of every (family, budget), written to ``out/plan.json``; an
    existing plan for the same protocol is reused (re-running a sweep gives the same step counts)."""
    from ..bench import machine

    path = out / "plan.json"
    key = _protocol_record(p)
    if path.is_file():
        plan = json.loads(path.read_text())
        if _same_sweep(plan.get("protocol"), key):  # step costs do not depend on the LR grid or the seeds
            missing = [f for f in p.families if f not in plan["step_ms"]]
            if missing:
                raise ValueError(f"{path} has no step cost for {missing} (timed together with "
                                 f"{sorted(plan['step_ms'])}); use another --out for a sweep with new families")
            plan["protocol"] = key
            write_json(path, plan)
            return plan
        raise ValueError(f"{path} was planned for another protocol; use another --out or --overwrite")
    costs = measure_step_costs(p)
    steps = {f: {f"{b:g}": max(1, round(b * 1e3 / costs[f])) for b in p.budgets} for f in p.families}
    plan = {"protocol": key, "step_ms": costs, "steps": steps, "machine": machine(),
            "how": f"median of {p.timing_rounds} interleaved training steps per family after {p.timing_warmup} "
                   "warm-up steps each, in one process; steps = round(budget / step cost)"}
    write_json(path, plan)
    return plan


def _protocol_record(p: Protocol) -> dict:
    return json.loads(json.dumps({"base": dataclasses.asdict(p.base), "families": p.families, "budgets": p.budgets,
                                  "lrs": p.lrs, "seeds": p.seeds, "val_chars": p.val_chars,
                                  "test_chars": p.test_chars, "timing_rounds": p.timing_rounds,
                                  "timing_warmup": p.timing_warmup}))


def run_job(p: Protocol, plan: dict, k: int, out: Path, progress: bool = True) -> dict:
    """Train job ``k`` of :func:`jobs` (resuming its checkpoints) into ``out/jobs/<name>``; its results."""
    grid = jobs(p)
    if not 0 <= k < len(grid):
        raise ValueError(f"--job {k}: this sweep has jobs 0..{len(grid) - 1}")
    family, lr, seed = grid[k]
    counts = sorted(plan["steps"][family].values())
    cfg = p.config(family, lr, seed, steps=counts[-1], val_at=counts)
    name = job_name(family, lr, seed)
    run_dir = out / "jobs" / name
    done = run_dir / "results.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))):
            return result
    return train_charlm(cfg, run_dir, resume=True, progress=progress, label=name)


def merge(p: Protocol, out: Path) -> dict:
    """The table, the figures and ``results.json`` from the plan and every finished job."""
    if not (out / "plan.json").is_file():
        raise ValueError(f"{out} has no plan.json: run the sweep's timing pass and jobs first")
    plan = json.loads((out / "plan.json").read_text())
    results, missing = {}, []
    for family, lr, seed in jobs(p):
        path = out / "jobs" / job_name(family, lr, seed) / "results.json"
        if path.is_file():
            results[(family, lr, seed)] = json.loads(path.read_text())
        else:
            missing.append(job_name(family, lr, seed))
    if missing:
        raise ValueError(f"{len(missing)} job(s) have no results yet: {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}; run them (--job K) first")
    vocab = len(load_corpus(p.base.data, p.base.val_fraction, p.base.max_chars).vocab)
    rows, choice, curves = [], {}, {}
    for family in p.families:
        model, hidden = p.family(family)
        params = count_parameters(**_model_kwargs(p.config(family, p.grid(family)[0], 0, 1), vocab))
        for budget in p.budgets:
            step = plan["steps"][family][f"{budget:g}"]
            at = {lr: [_at(results[(family, lr, s)], step) for s in p.seeds] for lr in p.grid(family)}
            best = min(at, key=lambda lr: statistics.mean(v for v, _ in at[lr]))  # on validation only
            choice.setdefault(family, {})[f"{budget:g}"] = best
            tests = [t for _, t in at[best]]
            rows.append({"family": family, "params": params[0], "LSTM params": params[1],
                         "ms/step": round(plan["step_ms"][family], 2), "budget s": budget, "steps": step,
                         "chosen lr": best, "val BPC": round(statistics.mean(v for v, _ in at[best]), 4),
                         "test BPC": round(statistics.mean(tests), 4),
                         "test min..max": f"{min(tests):.3f}..{max(tests):.3f}"})
            curves.setdefault(family, []).append((budget, tests, params[0]))
    record = {"experiment": "charlm equal compute", "protocol": _protocol_record(p), "plan": plan,
              "lr_choice": choice, "lr_grids": {f: p.grid(f) for f in p.families}, "rows": rows, "selection": "per family and budget: the LR with the lowest "
              "mean validation BPC over seeds; test BPC reported at that LR", "jobs": len(results)}
    write_json(out / "results.json", record)
    _plot(curves, p, plan, out / "equal_compute.png")
    text = (f"Character LM at equal measured compute ({plan['how']}); CPU {plan['machine']['cpu']}, "
            f"{plan['machine']['threads']} threads; seeds {p.seeds}; LR grids {p.lrs}; validation "
            f"{p.val_chars} chars (chooses the LR), test {p.test_chars} chars (reported)\n\n{format_table(rows)}\n")
    (out / "summary.md").write_text(text)
    record["summary"] = text
    return record


def _at(result: dict, step: int) -> tuple[float, float]:
    """(validation BPC, test BPC) of a job after ``step`` steps."""
    h = result["history"]
    i = h["val_step"].index(step)
    return h["val_bpc"][i], h["test_bpc"][i]


def _plot(curves: dict, p: Protocol, plan: dict, path: Path) -> Path:
    """Test BPC against compute budget (seed spread as a band) and against parameters at the largest budget."""
    fig, (ax_t, ax_p) = new_figure(ncols=2, figsize=(11, 4.4))
    for i, (family, pts) in enumerate(curves.items()):
        b = [x for x, _, _ in pts]
        mean = [statistics.mean(t) for _, t, _ in pts]
        ax_t.plot(b, mean, marker="os^v"[i % 4], label=family)
        ax_t.fill_between(b, [min(t) for _, t, _ in pts], [max(t) for _, t, _ in pts], alpha=0.2)
        _, tests, params = pts[-1]
        ax_p.errorbar([params], [statistics.mean(tests)], yerr=[[statistics.mean(tests) - min(tests)],
                                                               [max(tests) - statistics.mean(tests)]],
                      marker="os^v"[i % 4], capsize=3, label=family)
    ax_t.set(xlabel="training compute (s, from measured step costs)", ylabel="test bits/char", xscale="log",
             title="quality at equal compute (band: seed range)")
    ax_p.set(xlabel="parameters", ylabel="test bits/char", xscale="log",
             title=f"at the largest budget ({max(p.budgets):g} s)")
    for ax in (ax_t, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"char LM, {plan['machine']['cpu']}, {plan['machine']['threads']} threads, seeds {p.seeds}",
                 fontsize=9)
    return save_figure(fig, path)
