"""The wide-LSTM scaling sweep: dense and ACDC character LSTMs over hidden sizes at an equal wall-clock budget.

Every model trains (:func:`torch_acdc.experiments.charlm.train_charlm`) for ``time_budget`` seconds of training
steps (evaluation not counted) on the same corpus, batch and BPTT, in its own spawned process, so its peak
resident memory is its own; each run folder keeps checkpoints, and a finished run is not re-run, so the sweep
is resumable by re-running the same command. Validation runs after steps 1, 2, 4, 8, ... and at the end,
which gives the comparison at equal steps (the largest power of two every model reached) besides the one at
equal time. Cost: models run one after another, ~``len(models) * (time_budget + evaluation)`` seconds.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import resource
from pathlib import Path

import torch

from .charlm import CharLMConfig, train_charlm
from .common import format_table, new_figure, save_figure, write_json
from .stdlib_corpus import STDLIB_CORPUS

__all__ = ["SWEEP_FULL", "SWEEP_FAST", "sweep_base", "sweep_configs", "run_sweep", "sweep_rows", "equal_steps", "overtakes", "plot_sweep"]


# Presets (explicit flags win). val_every is effectively "never": validation is at powers of two and the end.
SWEEP_FULL = {"data": STDLIB_CORPUS, "batch": 16, "bptt": 32, "steps": 100000, "embed": 32, "time_budget": 180.0,
              "val_max_chars": 4096, "val_every": 10**9, "checkpoint_every": 25, "sample": 0,
              "acdc_hidden": [512, 2048, 4096, 8192], "dense_hidden": [256, 512, 1024, 2048]}
SWEEP_FAST = {**SWEEP_FULL, "max_chars": 40000, "batch": 4, "bptt": 16, "embed": 16, "time_budget": 3.0,
              "val_max_chars": 512, "checkpoint_every": 20, "acdc_hidden": [64, 256], "dense_hidden": [32]}


def sweep_base(preset: dict, **overrides) -> tuple[CharLMConfig, list[int], list[int]]:
    """(base config, ACDC sizes, dense sizes) from a preset; ``overrides`` that are not None win."""
    values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    acdc, dense = values.pop("acdc_hidden"), values.pop("dense_hidden")
    return CharLMConfig(**values), list(acdc), list(dense)


def sweep_configs(base: CharLMConfig, acdc_hidden: list[int], dense_hidden: list[int]) -> list[CharLMConfig]:
    """One config per (model, hidden): dense sizes first, then ACDC, all else as ``base``."""
    return [dataclasses.replace(base, model=m, hidden=h, val_pow2=True)
            for m, sizes in (("dense", dense_hidden), ("acdc", acdc_hidden)) for h in sizes]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(cfg: CharLMConfig, run_dir: str, threads: int | None, progress: bool, label: str) -> None:
    if threads:
        torch.set_num_threads(threads)
    before = _peak_rss_mib()
    result = train_charlm(cfg, run_dir, resume=True, progress=progress, label=label)
    result.update(peak_rss_mib=_peak_rss_mib(), start_rss_mib=before, threads=torch.get_num_threads())
    write_json(Path(run_dir) / "results.json", result)


def _finished(path: Path, cfg: CharLMConfig) -> dict | None:
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))) and \
        "peak_rss_mib" in result else None


def run_sweep(configs: list[CharLMConfig], out: Path, threads: int | None = None, progress: bool = True) -> list[dict]:
    """Train each config into ``out/<model>-h<hidden>`` (skipping finished ones); the results, in order."""
    results = []
    spawn = multiprocessing.get_context("spawn")
    for cfg in configs:
        label = f"{cfg.model}-h{cfg.hidden}"
        run_dir = out / label
        done = _finished(run_dir / "results.json", cfg)
        if done is None:
            proc = spawn.Process(target=_child, args=(cfg, str(run_dir), threads, progress, label))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"sweep run {label} failed (exit code {proc.exitcode}); see its output above")
            done = _finished(run_dir / "results.json", cfg)
        results.append(done)
    return results


MANIFEST = "sweep.json"


def claim_sweep_dir(out: Path, configs: list[CharLMConfig], overwrite: bool = False) -> Path:
    """Make ``out`` this sweep's folder: a folder holding the *same* sweep (its ``sweep.json`` lists the same
    configs) is continued (re-running the command resumes it); one holding another sweep or another run is
    refused (:class:`~torch_acdc.training.RunFolderError`) unless ``overwrite``, which removes the old
    sweep's results and model folders (only those it lists). Locks the folder."""
    import shutil

    from ..training.runs import RunFolderError, holds_run, lock_dir

    manifest = {"configs": [dataclasses.asdict(c) for c in configs]}
    manifest = json.loads(json.dumps(manifest))
    path = out / MANIFEST
    old = json.loads(path.read_text()) if path.is_file() else None
    if old != manifest and (old is not None or holds_run(out)):
        if not overwrite:
            what = "another sweep (different settings)" if old is not None else f"another run ({', '.join(holds_run(out))})"
            raise RunFolderError(out, f"holds {what}; re-run that sweep's own command to continue it, replace it "
                                      "(--overwrite) or choose another folder")
        lock_dir(out)
        for cfg in (old or {}).get("configs", []):
            shutil.rmtree(out / f"{cfg['model']}-h{cfg['hidden']}", ignore_errors=True)
        for name in ("results.json", "summary.md", "sweep.png", MANIFEST):
            (out / name).unlink(missing_ok=True)
    lock_dir(out)
    write_json(path, manifest)
    return out


def _val_at(result: dict, step: int) -> float | None:
    h = result["history"]
    return dict(zip(h["val_step"], h["val_bpc"])).get(step)


def equal_steps(results: list[dict]) -> int:
    """The largest power of two that every run reached (each validated there)."""
    reached = min(r["steps_done"] for r in results)
    return 1 << (reached.bit_length() - 1) if reached else 0


def overtakes(results: list[dict]) -> dict:
    """At equal time: the best dense run, and the ACDC runs whose final validation BPC beats it."""
    dense = [r for r in results if r["config"]["model"] == "dense"]
    acdc = [r for r in results if r["config"]["model"] == "acdc"]
    if not dense or not acdc:
        return {"best_dense": None, "acdc_better": []}
    best = min(dense, key=lambda r: r["final_val_bpc"])
    return {"best_dense": best["label"], "best_dense_bpc": best["final_val_bpc"],
            "acdc_better": [r["label"] for r in acdc if r["final_val_bpc"] < best["final_val_bpc"]]}


def sweep_rows(results: list[dict]) -> list[dict]:
    """One Markdown-table row per run."""
    common = equal_steps(results)
    return [{"model": r["config"]["model"], "hidden": r["config"]["hidden"], "params": r["parameters"],
             "LSTM params": r["recurrent_parameters"], "steps": r["steps_done"],
             "s/step": round(r["train_seconds"] / max(r["steps_done"], 1), 3),
             "peak RSS MiB": round(r["peak_rss_mib"]), f"val BPC @ step {common}": _val_at(r, common),
             "val BPC @ equal time": r["final_val_bpc"]} for r in results]


def plot_sweep(results: list[dict], path: Path, title: str) -> Path:
    """Validation BPC against hidden size, parameters and training seconds; dense solid circles, ACDC dashed
    squares."""
    fig, axes = new_figure(ncols=3, figsize=(15, 4.5))
    style = {"dense": {"marker": "o", "ls": "-"}, "acdc": {"marker": "s", "ls": "--"}}
    for kind in ("dense", "acdc"):
        runs = [r for r in results if r["config"]["model"] == kind]
        if not runs:
            continue
        bpc = [r["final_val_bpc"] for r in runs]
        axes[0].plot([r["config"]["hidden"] for r in runs], bpc, label=kind, **style[kind])
        axes[1].plot([r["parameters"] for r in runs], bpc, label=kind, **style[kind])
        for r in runs:
            h = r["history"]
            axes[2].plot(h["val_seconds"], h["val_bpc"], ms=3, label=r["label"], **style[kind])
    for ax, xlabel in zip(axes, ("hidden size", "parameters", "training seconds")):
        ax.set(xlabel=xlabel, ylabel="validation bits/char", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("at equal wall-clock")
    axes[1].set_title("at equal wall-clock")
    axes[2].set_title("during training")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def summarise(results: list[dict], out: Path, title: str) -> str:
    """Write ``out/results.json``, ``out/sweep.png``, ``out/summary.md``; return the Markdown summary."""
    cross = overtakes(results)
    write_json(out / "results.json", {"runs": results, "equal_steps": equal_steps(results), "overtakes": cross})
    plot_sweep(results, out / "sweep.png", title)
    text = (f"{title}\n\n{format_table(sweep_rows(results))}\n\nbest dense at equal time: {cross['best_dense']}"
            f" ({cross.get('best_dense_bpc')}); ACDC runs better than it: {cross['acdc_better'] or 'none'}\n")
    (out / "summary.md").write_text(text)
    return text
