"""The one comparison protocol behind every command that compares families of models.

``acdc charlm --sweep``, ``acdc compress`` and ``acdc classify --sweep`` each describe their families as an
:class:`Experiment` (how to build one training step, how to train one job and score it); this module does the
rest, identically for all three:

1. **Timing pass** (:func:`make_plan`, one process, ``plan.json``): every family's training step is built,
   warmed up (native kernel build, FFT plans, allocator - all outside the clock), then timed interleaved (one
   step of each family per round, medians), so a noisy machine slows all alike.
2. **Equal compute**: each budget (seconds of training compute) becomes a step count per family,
   ``steps = round(budget / step cost)``. A job trains to its family's largest count and is scored on the
   validation and the test data after every budget's count: quality against compute at every budget.
3. **Per-family learning rate**: each family has its own grid; the best rate is chosen per family and budget
   on the *validation* score (mean over seeds; a diverged, non-finite run ranks last) and the *test* metrics
   at that rate are reported with their range over seeds.
4. **Jobs**: the grid (family x LR x seed) is a list of independent jobs, each a resumable run in
   ``jobs/<name>/`` that writes ``result.json`` when done; :func:`merge` builds the rows and ``results.json``,
   which records the protocol (seeds, grids, the choice per family and budget, how equal compute was set,
   CPU model, threads). The CLI (:mod:`torch_acdc.cli.grid`) runs everything, one job (``--job K``), prints
   one command per job (``--list-jobs``) or only merges (``--merge``).

A folder holds one comparison (``sweep.json``): re-running its command continues it (the grid - LRs, seeds,
a subset of the families - may change; finished jobs are kept), another comparison is refused unless
``--overwrite``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .common import write_json

__all__ = ["Grid", "Experiment", "check_grid", "jobs", "job_name", "time_interleaved", "contention", "step_counts",
           "choose",
           "claim_dir", "make_plan", "run_job", "merge", "MANIFEST"]

MANIFEST = "sweep.json"


@dataclass
class Grid:
    """What is compared: families, compute budgets (seconds), a learning-rate grid per family, seeds; and how
    the timing pass measures step costs (``timing_rounds`` interleaved steps after ``timing_warmup``)."""

    families: list[str]
    budgets: list[float]
    lrs: dict[str, list[float]]
    seeds: list[int]
    timing_rounds: int = 12
    timing_warmup: int = 4

    def grid(self, family: str) -> list[float]:
        return list(self.lrs[family])


def check_grid(g: Grid) -> None:
    """One ValueError naming the problem: repeated families, non-positive or repeated budgets / LRs, negative or
    repeated seeds, a family without an LR grid."""
    if not g.families or len(set(g.families)) != len(g.families):
        raise ValueError(f"families must be distinct and non-empty, got {g.families}")
    if not g.budgets or any(not b > 0 for b in g.budgets) or len(set(g.budgets)) != len(g.budgets):
        raise ValueError(f"budgets must be distinct positive seconds, got {g.budgets}")
    for family in g.families:
        grid = g.lrs.get(family)
        if not grid or any(not lr > 0 for lr in grid) or len(set(grid)) != len(grid):
            raise ValueError(f"the learning-rate grid must be distinct positive numbers, got {grid} ({family})")
    if not g.seeds or len(set(g.seeds)) != len(g.seeds) or any(s < 0 for s in g.seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {g.seeds}")
    if g.timing_rounds < 1 or g.timing_warmup < 1:
        raise ValueError(f"timing needs >= 1 warm-up and >= 1 timed step, got {g.timing_warmup} / {g.timing_rounds}")


class Experiment(ABC):
    """What a comparison supplies (subclass; the abstract methods are required):

    * ``name``; ``val_metric`` (the validation score that chooses the LR) and ``higher_is_better``;
      ``test_metrics`` (reported, the first one is the headline);
    * :meth:`settings`: everything besides the grid that defines the comparison (JSON), for ``sweep.json``;
    * :meth:`step_functions`: ``{family: one training step}``, freshly built, for the timing pass;
    * :meth:`train`: one job, resumable from its own checkpoints in ``run_dir``; returns its configuration and
      one point per requested step count: ``{"step", "val", <test metric>: value, ...}``;
    * :meth:`describe`: per-family facts for the rows (parameters, ...); :meth:`baselines`: reference rows
      (the original model, a floor) and :meth:`facts` (per family, e.g. inference time), both measured once by
      the plan; :meth:`plot`: the figures in the folder.
    """

    name = "comparison"
    val_metric = "val"
    higher_is_better = False
    test_metrics: tuple[str, ...] = ("test",)

    @abstractmethod
    def settings(self) -> dict: ...

    @abstractmethod
    def step_functions(self, grid: Grid) -> dict[str, Callable[[], None]]: ...

    @abstractmethod
    def train(self, family: str, lr: float, seed: int, counts: list[int], run_dir: Path,
              progress: bool) -> dict: ...

    def describe(self, family: str) -> dict:
        return {}

    def facts(self, grid: Grid) -> dict:
        """{family: measured facts for the rows} taken by the plan (e.g. inference time), once."""
        return {}

    def baselines(self) -> list[dict]:
        return []

    def plot(self, record: dict, out: Path) -> list[Path]:
        return [plot_against_compute(record, self, out / "equal_compute.png")]


def job_name(family: str, lr: float, seed: int) -> str:
    return f"{family.replace(':', '-h')}-lr{lr:g}-s{seed}"


def jobs(g: Grid) -> list[tuple[str, float, int]]:
    """(family, lr, seed) of every job, in a fixed order (``--job K`` indexes it)."""
    return [(f, lr, s) for f in g.families for lr in g.grid(f) for s in g.seeds]


def time_interleaved(steps: dict[str, Callable[[], None]], warmup: int, rounds: int,
                     cpu: dict | None = None) -> dict[str, float]:
    """Median milliseconds of each callable, run ``warmup`` times each (untimed: builds, plans, allocator)
    and then ``rounds`` times interleaved (one call of each per round). ``cpu``, if given, receives each
    callable's median process CPU milliseconds (all threads) over the same calls
    (:func:`torch_acdc.bench.interleaved_times` takes the times)."""
    from ..bench import interleaved_times

    cpu_times: dict = {}
    times = interleaved_times(steps, rounds, warmup, cpu=cpu_times)
    if cpu is not None:
        cpu.update({name: statistics.median(t) for name, t in cpu_times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


def contention(step_ms: dict[str, float], cpu_ms: dict[str, float], threads: int) -> str | None:
    """A warning when the timing pass was slowed by other work: on one thread a step's wall time should equal
    its CPU time; a family whose wall time exceeds it by more than 25 % was preempted, and preemption hurts
    long steps more than short ones, so the step costs are not comparable. None when they look clean (or with
    several threads, where wall and CPU time differ by design)."""
    if threads != 1:
        return None
    slow = {f: step_ms[f] / cpu_ms[f] for f in step_ms if cpu_ms.get(f, 0) > 0 and step_ms[f] > 1.25 * cpu_ms[f]}
    if not slow:
        return None
    worst = ", ".join(f"{f} {r:.2f}x" for f, r in sorted(slow.items(), key=lambda kv: -kv[1]))
    return (f"the timing pass was slowed by other work on this machine (wall / CPU time per step: {worst}); the "
            "step costs are not comparable: re-run the timing pass on a quiet machine (--plan-only --overwrite)")


def step_counts(budgets: list[float], step_ms: float) -> dict[str, int]:
    """{budget: steps} for one family: ``round(budget / step cost)``, at least one step."""
    return {f"{b:g}": max(1, round(b * 1e3 / step_ms)) for b in budgets}


def choose(scores: dict[float, list[float]], higher_is_better: bool) -> float:
    """The key (learning rate) with the best mean score over seeds; non-finite means (diverged) rank last."""
    def rank(lr: float) -> float:
        mean = statistics.fmean(scores[lr])
        if not math.isfinite(mean):
            return -math.inf
        return mean if higher_is_better else -mean
    return max(scores, key=rank)


# ------------------------------------------------------------------------------------------------ folders
def _record(exp: Experiment, g: Grid) -> dict:
    return json.loads(json.dumps({"experiment": exp.name, "settings": exp.settings(), **asdict(g)}))


_GRID_KEYS = ("lrs", "seeds", "families")  # a sweep may change these: jobs are keyed by (family, lr, seed)


def _same(old: dict | None, new: dict) -> bool:
    strip = lambda r: {k: v for k, v in r.items() if k not in _GRID_KEYS}  # noqa: E731
    return old is not None and strip(old) == strip(new)


def claim_dir(out: Path, exp: Experiment, g: Grid, overwrite: bool = False, job: bool = False) -> Path:
    """Make ``out`` this comparison's folder: one holding the *same* comparison (its ``sweep.json``) is
    continued; one holding another comparison or another run is refused
    (:class:`~torch_acdc.training.RunFolderError`) unless ``overwrite``, which removes that comparison's plan,
    jobs and outputs (nothing else). Locks the folder - except for a ``job`` (one job of a comparison whose plan
    exists), which only checks the manifest and leaves the folder to the other jobs: each job locks its own
    ``jobs/<name>`` folder, so jobs run concurrently on a shared file system."""
    from ..training.runs import RunFolderError, holds_run, lock_dir

    manifest = _record(exp, g)
    path = out / MANIFEST
    old = json.loads(path.read_text()) if path.is_file() else None
    if job:
        if not _same(old, manifest) or not (out / "plan.json").is_file():
            raise RunFolderError(out, "has no timing pass for this comparison: run the same command with "
                                      "--plan-only first (once), then the jobs")
        return out
    if not _same(old, manifest) and (old is not None or holds_run(out) or (out / "jobs").exists()
                                     or (out / "results.json").exists()):
        if not overwrite:
            what = "another comparison (other settings)" if old is not None else "another run"
            raise RunFolderError(out, f"holds {what}; re-run that comparison's own command to continue it, replace "
                                      "it (--overwrite) or choose another folder")
        lock_dir(out)
        shutil.rmtree(out / "jobs", ignore_errors=True)
        for name in ("plan.json", "results.json", "summary.md", MANIFEST):
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()
    lock_dir(out)
    if old != manifest:
        write_json(path, manifest)
    return out


def make_plan(out: Path, exp: Experiment, g: Grid) -> dict:
    """The timing pass, the step counts of every (family, budget) and the baselines, in ``out/plan.json``; an
    existing plan for the same comparison is reused (re-running gives the same step counts)."""
    from ..bench import machine

    path = out / "plan.json"
    key = _record(exp, g)
    if path.is_file():
        plan = json.loads(path.read_text())
        if not _same(plan.get("protocol"), key):
            raise ValueError(f"{path} was planned for another comparison; use another --out or --overwrite")
        missing = [f for f in g.families if f not in plan["step_ms"]]
        if missing:
            raise ValueError(f"{path} has no step cost for {missing} (timed together with "
                             f"{sorted(plan['step_ms'])}); use another --out for a comparison with new families")
        if plan["protocol"] != key:  # a grown grid: record it (jobs running beside this leave it unchanged)
            plan["protocol"] = key
            write_json(path, plan)
        return plan
    import torch

    load_before, cpu = os.getloadavg()[0], {}
    costs = time_interleaved(exp.step_functions(g), g.timing_warmup, g.timing_rounds, cpu)
    warning = contention(costs, cpu, torch.get_num_threads())
    if warning:
        warnings.warn(warning, stacklevel=2)
    plan = {"protocol": key, "step_ms": costs, "steps": {f: step_counts(g.budgets, costs[f]) for f in g.families},
            "cpu_ms": cpu, "load_average": [load_before, os.getloadavg()[0]], "contention": warning,
            "machine": machine(), "baselines": exp.baselines(), "facts": exp.facts(g),
            "how": f"median of {g.timing_rounds} interleaved training steps per family after {g.timing_warmup} "
                   "warm-up steps each, in one process; steps = round(budget / step cost)"}
    write_json(path, plan)
    return plan


def run_job(out: Path, exp: Experiment, g: Grid, plan: dict, k: int, progress: bool = True) -> dict:
    """Train job ``k`` of :func:`jobs` into ``out/jobs/<name>`` (resuming its checkpoints; a finished job with
    the same configuration is not re-run); its result."""
    grid = jobs(g)
    if not 0 <= k < len(grid):
        raise ValueError(f"--job {k}: this comparison has jobs 0..{len(grid) - 1}")
    from ..training.runs import lock_dir

    family, lr, seed = grid[k]
    counts = sorted(set(plan["steps"][family].values()))
    run_dir = out / "jobs" / job_name(family, lr, seed)
    lock_dir(run_dir)  # one process per job; other jobs of the grid may run beside it
    done = run_dir / "result.json"
    want = {"family": family, "lr": lr, "seed": seed, "counts": counts, "settings": _record(exp, g)["settings"]}
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("job") == want:
            return result
    result = {"job": want, **exp.train(family, lr, seed, counts, run_dir, progress)}
    write_json(done, result)
    return result


@dataclass
class _Cell:
    scores: dict = field(default_factory=dict)  # lr -> [validation score per seed]
    tests: dict = field(default_factory=dict)  # lr -> [{metric: value} per seed]


def merge(out: Path, exp: Experiment, g: Grid, fast: bool = False) -> dict:
    """``results.json`` and ``summary.md`` from the plan and every finished job: one row per (family, budget)
    at the learning rate chosen on validation, test metrics as the mean and range over seeds. ``fast``: a smoke
    run, said so in the figures' titles."""
    from ..markdown import format_table

    if not (out / "plan.json").is_file():
        raise ValueError(f"{out} has no plan.json: run the comparison's timing pass and jobs first")
    plan = json.loads((out / "plan.json").read_text())
    results, missing = {}, []
    for family, lr, seed in jobs(g):
        path = out / "jobs" / job_name(family, lr, seed) / "result.json"
        if path.is_file():
            results[(family, lr, seed)] = json.loads(path.read_text())
        else:
            missing.append(job_name(family, lr, seed))
    if missing:
        raise ValueError(f"{len(missing)} job(s) have no results yet: {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}; run them (--job K) first")
    rows, choice = [], {}
    for family in g.families:
        facts = {**exp.describe(family), **plan.get("facts", {}).get(family, {})}
        for budget in g.budgets:
            step = plan["steps"][family][f"{budget:g}"]
            cell = _Cell()
            for lr in g.grid(family):
                points = [_point(results[(family, lr, s)], step) for s in g.seeds]
                cell.scores[lr] = [p["val"] for p in points]
                cell.tests[lr] = points
            best = choose(cell.scores, exp.higher_is_better)
            choice.setdefault(family, {})[f"{budget:g}"] = best
            row = {"family": family, **facts, "ms/step": round(plan["step_ms"][family], 2), "budget s": budget,
                   "steps": step, "chosen lr": best, exp.val_metric: _mean(cell.scores[best])}
            for m in exp.test_metrics:
                values = [p[m] for p in cell.tests[best]]
                row[m] = _mean(values)
                row[f"{m} min..max"] = f"{min(values):.4g}..{max(values):.4g}"
                row.setdefault("range", {})[m] = [min(values), max(values)]
            row["by lr"] = {f"{lr:g}": _mean(v) for lr, v in cell.scores.items()}
            rows.append(row)
    record = {"experiment": exp.name, "protocol": _record(exp, g), "plan": plan, "lr_choice": choice,
              "lr_grids": {f: g.grid(f) for f in g.families}, "rows": rows, "baselines": plan.get("baselines", []),
              "selection": f"per family and budget: the LR with the {'highest' if exp.higher_is_better else 'lowest'} "
                           f"mean {exp.val_metric} over seeds; test metrics reported at that LR", "jobs": len(results),
              "seeds": g.seeds, "fast": fast}
    write_json(out / "results.json", record)
    record["figures"] = [p.name for p in exp.plot(record, out)]
    write_json(out / "results.json", record)
    table = format_table([{k: v for k, v in r.items() if k not in ("by lr", "range")} for r in rows])
    base = format_table([{"variant": b.get("variant"), **b} for b in plan["baselines"]]) if plan.get("baselines") else ""
    text = (f"{exp.name} at equal measured compute ({plan['how']}); CPU {plan['machine']['cpu']}, "
            f"{plan['machine']['threads']} threads; seeds {g.seeds}; LR grids {g.lrs}; {record['selection']}\n\n"
            f"{table}\n" + (f"\nReference rows:\n\n{base}\n" if base else ""))
    (out / "summary.md").write_text(text)
    record["summary"] = text
    return record


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 6)


def _point(result: dict, step: int) -> dict:
    for p in result["points"]:
        if p["step"] == step:
            return p
    raise ValueError(f"job {result['job']} has no point at step {step}")


def plot_against_compute(record: dict, exp: Experiment, path: Path) -> Path:
    """The headline test metric against compute (seed range as a band) and against parameters at the largest
    budget, every family on the same axes; baselines as horizontal lines."""
    from .common import new_figure, save_figure

    metric = exp.test_metrics[0]
    fig, (ax_t, ax_p) = new_figure(ncols=2, figsize=(11, 4.4))
    families = list(dict.fromkeys(r["family"] for r in record["rows"]))
    for i, family in enumerate(families):
        rows = [r for r in record["rows"] if r["family"] == family]
        lo_hi = [r["range"][metric] for r in rows]
        b, y = [r["budget s"] for r in rows], [r[metric] for r in rows]
        ax_t.plot(b, y, marker="os^v<>"[i % 6], label=family)
        ax_t.fill_between(b, [lo for lo, _ in lo_hi], [hi for _, hi in lo_hi], alpha=0.2)
        if "params" in rows[-1]:
            ax_p.errorbar([rows[-1]["params"]], [y[-1]], yerr=[[max(0, y[-1] - lo_hi[-1][0])], [max(0, lo_hi[-1][1] - y[-1])]],
                          marker="os^v<>"[i % 6], capsize=3, label=family)
    for j, base in enumerate(record.get("baselines") or []):
        if metric in base:
            for ax in (ax_t, ax_p):
                ax.axhline(base[metric], color="k", ls=("-", ":", "--")[j % 3], lw=1, label=base.get("variant"))
    budgets = record["protocol"]["budgets"]
    ax_t.set(xlabel="training compute (s, from measured step costs)", ylabel=metric, xscale="log",
             title="quality at equal compute (band: seed range)")
    ax_p.set(xlabel="parameters", ylabel=metric, xscale="log", title=f"at the largest budget ({max(budgets):g} s)")
    for ax in (ax_t, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    m = record["plan"]["machine"]
    smoke = "[--fast smoke run] " if record.get("fast") else ""
    fig.suptitle(f"{smoke}{exp.name}, {m['cpu']}, {m['threads']} threads, seeds {record['seeds']}", fontsize=9)
    return save_figure(fig, path)
