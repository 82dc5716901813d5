"""Approximate a dense matrix with structured stacks of depth 1..32: error vs parameters, per permutation kind.

Two protocols (``--protocol``), each a mean +- std over seeds (every seed draws a new target and a new init):

* ``matrix`` (default): fit ``to_dense()`` of a bias-free stack to W itself (:func:`torch_acdc.fit.fit_dense`).
  W is a Gaussian N(0, 1) n x n matrix, or the matrix in ``--matrix FILE`` (.npy or .pt, any out x in).
  Error = relative Frobenius error ||W_hat - W||_F / ||W||_F (scale-free; 1 = no better than zero).
* ``log``: the research log's setup (pytorch-acdc, 5th/6th November 2018), for a like-for-like comparison with
  its table: n = 32, targets y = W x + b with W and b drawn like ``nn.Linear``'s default init
  (U(-1/sqrt(n), 1/sqrt(n))), 100 inputs x ~ U(0, 1)^n, a bias-free stack fitted to the pairs.
  Error = final mean squared error over the 100 x n outputs (the log's "final MSE").

The layer class is pluggable (``--layer acdc|afdf``: StackedACDC or the complex StackedAFDF).
Writes results.json, error_vs_params.png and curves.png (mean error during optimisation).
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..fit import fit_dense, matrix_evaluator, minimise
from ..layers import StackedACDC
from .common import new_figure, save_figure
from .linear_problem import make_problem

__all__ = ["PROTOCOLS", "RESEARCH_LOG", "layer_class", "load_matrix", "log_baselines", "approximate",
           "summarise", "compares_to_log", "plot_errors", "plot_curves", "DEFAULTS", "FAST"]

PROTOCOLS = ("matrix", "log")
PERMUTATIONS = {"random": "random", "riffle": "riffle", "none": None}
LOG_SAMPLES = 100  # inputs per target in the research log's protocol

# The research log's reported final MSE (mean, std over 10 replicates; n = 32, StackedLinearACDC fitted with
# scipy's CG, maxiter 1000), 6th November 2018. Reference values for comparison, not results of this code.
RESEARCH_LOG = {
    "random": {1: (0.039945, 0.005887), 2: (0.021969, 0.001331), 4: (0.016572, 0.001287),
               8: (0.012997, 0.001245), 16: (0.011955, 0.002469), 32: (0.009839, 0.001569)},
    "riffle": {1: (0.037382, 0.002288), 2: (0.022297, 0.000917), 4: (0.016447, 0.001138),
               8: (0.015047, 0.002108), 16: (0.014237, 0.001500), 32: (0.013476, 0.002043)},
    "none": {1: (0.042673, 0.003500), 2: (0.021928, 0.000855), 4: (0.016392, 0.000672),
             8: (0.016679, 0.001682), 16: (0.019225, 0.001957), 32: (0.021551, 0.001583)},
}

DEFAULTS = {"optimizer": "lbfgs", "steps": 1000, "lr": 1.0}  # the log: scipy CG, maxiter 1000
FAST = {"n": 16, "depths": [1, 4], "seeds": 2, "optimizer": "lbfgs", "steps": 40, "lr": 1.0}


def layer_class(name: str):
    """'acdc' -> StackedACDC, 'afdf' -> torch_acdc.afdf.StackedAFDF (imported lazily)."""
    if name == "acdc":
        return StackedACDC
    if name == "afdf":
        from ..afdf import StackedAFDF

        return StackedAFDF
    raise ValueError(f"unknown layer {name!r}: expected 'acdc' or 'afdf'")


def load_matrix(path: str | Path) -> torch.Tensor:
    """A 2-D float64 matrix from a .npy file (numpy) or a .pt file holding a tensor."""
    path = Path(path)
    if path.suffix == ".npy":
        w = torch.from_numpy(np.load(path))
    elif path.suffix in (".pt", ".pth"):
        w = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"--matrix expects a .npy or .pt file, got {path}")
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got {type(w).__name__} "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else ''}")
    return w.to(torch.float64)


def _log_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the research log's protocol for one seed: nn.Linear-style W, b; 100 inputs x ~ U(0, 1)^n
    (the linear problem's targets, with fewer samples)."""
    return make_problem(n, LOG_SAMPLES, "linear-init", seed)


def log_baselines(n: int, seeds: int, first_seed: int = 0) -> dict:
    """Reference MSEs of the log protocol, averaged over seeds ``first_seed .. first_seed + seeds - 1``:
    predicting 0, predicting each output's mean, and the best bias-free dense matrix (least squares) -- what a
    structured fit should be judged against."""
    zero, constant, dense = [], [], []
    for seed in range(first_seed, first_seed + seeds):
        x, y = (t.double() for t in _log_problem(n, seed))
        zero.append(y.square().mean().item())
        constant.append(y.var(0, correction=0).mean().item())
        dense.append((x @ torch.linalg.lstsq(x, y).solution - y).square().mean().item())
    return {"zero": statistics.fmean(zero), "constant": statistics.fmean(constant),
            "dense_least_squares": statistics.fmean(dense)}


def approximate(protocol: str, layer_cls, depth: int, permutation, seed: int, *, n: int = 32,
                matrix: torch.Tensor | None = None, optimizer: str, steps: int, lr: float) -> dict:
    """One fit; returns {"error", "history", "params"} (see the module docstring for the error of each protocol)."""
    if protocol == "matrix":
        target = matrix if matrix is not None else torch.randn(n, n, generator=torch.Generator().manual_seed(seed))
        res = fit_dense(target.float(), depth, permutation, optimizer=optimizer, steps=steps, lr=lr, seed=seed,
                        layer_cls=layer_cls, bias=False)
        return {"error": res.error, "history": res.history,
                "params": sum(p.numel() for p in res.module.parameters())}
    if protocol == "log":
        x, y = _log_problem(n, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = layer_cls(n, n, depth, permutation=permutation, bias=False)
        weight = matrix_evaluator(module)
        history = minimise(module.parameters(), lambda: F.mse_loss(x @ weight().to(x.dtype).T, y),
                           optimizer=optimizer, steps=steps, lr=lr)
        return {"error": history[-1], "history": history, "params": sum(p.numel() for p in module.parameters())}
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {PROTOCOLS}")


def summarise(runs: list[dict]) -> dict:
    """Seeds of one configuration -> params, errors, mean, population std and the mean error curve."""
    errors = [r["error"] for r in runs]
    length = max(len(r["history"]) for r in runs)  # L-BFGS histories end early at convergence: pad
    padded = [r["history"] + r["history"][-1:] * (length - len(r["history"])) for r in runs]
    return {"params": runs[0]["params"], "errors": errors, "error_mean": statistics.fmean(errors),
            "error_std": statistics.pstdev(errors) if len(errors) > 1 else 0.0,
            "mean_curve": subsample([statistics.fmean(v) for v in zip(*padded)])}


def subsample(history: list[float], points: int = 200) -> list[tuple[int, float]]:
    stride = max(1, len(history) // points)
    idx = sorted(set(range(0, len(history), stride)) | {len(history) - 1})
    return [(i, history[i]) for i in idx]


def compares_to_log(protocol: str, layer: str, n: int) -> bool:
    """The research log's numbers are comparable: its protocol, ACDC layers, n = 32."""
    return protocol == "log" and layer == "acdc" and n == 32


def plot_errors(rows: list[dict], protocol: str, layer: str, compare: bool, path: Path) -> None:
    fig, ax = new_figure(figsize=(6.5, 4.2))
    for perm in dict.fromkeys(r["permutation"] for r in rows):
        rs = [r for r in rows if r["permutation"] == perm]
        line = ax.errorbar([r["params"] for r in rs], [r["error_mean"] for r in rs],
                           yerr=[r["error_std"] for r in rs], marker="o", capsize=3, label=f"{layer} {perm}")
        if compare:
            ref = [r for r in rs if "log_mean" in r]
            ax.plot([r["params"] for r in ref], [r["log_mean"] for r in ref], ls="--", alpha=0.6,
                    color=line[0].get_color(), label=f"research log {perm}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("relative Frobenius error" if protocol == "matrix" else "final MSE")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_curves(rows: list[dict], path: Path) -> None:
    perms = list(dict.fromkeys(r["permutation"] for r in rows))
    fig, axes = new_figure(ncols=len(perms), figsize=(4 * len(perms), 3.5), squeeze=False, sharey=True)
    for ax, perm in zip(axes[0], perms):
        for r in (r for r in rows if r["permutation"] == perm):
            steps, values = zip(*r["mean_curve"])
            ax.plot(steps, values, label=f"depth {r['depth']}")
        ax.set_title(f"permutation: {perm}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean error")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)
