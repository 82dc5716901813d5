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

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..fit import OPTIMIZERS, fit_dense, matrix_evaluator, minimise
from ..layers import StackedACDC
from .common import format_table, make_run_dir, new_figure, save_figure, write_json
from .linear_problem import make_problem

__all__ = ["PROTOCOLS", "RESEARCH_LOG", "layer_class", "load_matrix", "log_baselines", "approximate",
           "add_arguments", "run"]

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


def log_baselines(n: int, seeds: int) -> dict:
    """Reference MSEs of the log protocol, averaged over seeds: predicting 0, predicting each output's mean,
    and the best bias-free dense matrix (least squares) -- what a structured fit should be judged against."""
    zero, constant, dense = [], [], []
    for seed in range(seeds):
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS, default="matrix")
    p.add_argument("--matrix", default=None, help="matrix protocol: approximate this .npy/.pt matrix")
    p.add_argument("--layer", choices=("acdc", "afdf"), default="acdc")
    p.add_argument("--n", type=int, default=32, help="size of the random n x n targets")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--permutations", nargs="+", choices=list(PERMUTATIONS), default=list(PERMUTATIONS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"])
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="L-BFGS: 1; Adam: ~1e-2")
    p.add_argument("--fast", action="store_true", help=f"quick smoke run: {FAST}")
    p.add_argument("--out", default=None, help="run folder (default runs/approx-<time>)")
    p.add_argument("--no-progress", action="store_true")


def _summarise(runs: list[dict]) -> dict:
    """Seeds of one configuration -> params, errors, mean, population std and the mean error curve."""
    errors = [r["error"] for r in runs]
    length = max(len(r["history"]) for r in runs)  # L-BFGS histories end early at convergence: pad
    padded = [r["history"] + r["history"][-1:] * (length - len(r["history"])) for r in runs]
    return {"params": runs[0]["params"], "errors": errors, "error_mean": statistics.fmean(errors),
            "error_std": statistics.pstdev(errors) if len(errors) > 1 else 0.0,
            "mean_curve": _subsample([statistics.fmean(v) for v in zip(*padded)])}


def _subsample(history: list[float], points: int = 200) -> list[tuple[int, float]]:
    stride = max(1, len(history) // points)
    idx = sorted(set(range(0, len(history), stride)) | {len(history) - 1})
    return [(i, history[i]) for i in idx]


def _compares_to_log(args: argparse.Namespace) -> bool:
    """The research log's numbers are comparable: its protocol, ACDC layers, n = 32."""
    return args.protocol == "log" and args.layer == "acdc" and args.n == 32


def _plot_errors(rows: list[dict], protocol: str, layer: str, compare: bool, path: Path) -> None:
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


def _plot_curves(rows: list[dict], path: Path) -> None:
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


def run(args: argparse.Namespace) -> int:
    if args.fast:
        for key, value in FAST.items():
            setattr(args, key, value)
    if args.protocol == "log" and args.matrix:
        raise SystemExit("--matrix applies to the matrix protocol only")
    layer_cls = layer_class(args.layer)
    matrix = load_matrix(args.matrix) if args.matrix else None
    n = args.n if matrix is None else f"{matrix.shape[0]}x{matrix.shape[1]}"
    out = make_run_dir(args.out, "approx", overwrite=getattr(args, "overwrite", False))
    jobs = [(perm, depth, seed) for perm in args.permutations for depth in args.depths for seed in range(args.seeds)]
    bar = tqdm(jobs, desc="approx", disable=args.no_progress)
    fits: dict[tuple, list[dict]] = {}
    for perm, depth, seed in bar:
        bar.set_postfix(perm=perm, depth=depth, seed=seed, refresh=False)
        fits.setdefault((perm, depth), []).append(
            approximate(args.protocol, layer_cls, depth, PERMUTATIONS[perm], seed, n=args.n, matrix=matrix,
                        optimizer=args.optimizer, steps=args.steps, lr=args.lr))
    rows = []
    for (perm, depth), runs in fits.items():
        row = {"permutation": perm, "depth": depth, **_summarise(runs)}
        if _compares_to_log(args) and depth in RESEARCH_LOG[perm]:
            row["log_mean"], row["log_std"] = RESEARCH_LOG[perm][depth]
        rows.append(row)
    metric = ("relative Frobenius error ||W_hat - W||_F / ||W||_F" if args.protocol == "matrix" else
              "final mean squared error over 100 x n outputs of y = W x + b, x ~ U(0,1)^n")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    baselines = log_baselines(args.n, args.seeds) if args.protocol == "log" else None
    _plot_errors(rows, args.protocol, args.layer, _compares_to_log(args), out / "error_vs_params.png")
    _plot_curves(rows, out / "curves.png")
    write_json(out / "results.json", {"experiment": "approx", "protocol": args.protocol, "metric": metric,
                                      "target": "file " + str(args.matrix) if matrix is not None else
                                      ("N(0,1) n x n" if args.protocol == "matrix" else "nn.Linear init W, b"),
                                      "n": n, "config": config, "rows": rows, "baselines": baselines})
    cols = ["permutation", "depth", "params", "error"] + (["research log"] if "log_mean" in rows[0] else [])
    table = [{"permutation": r["permutation"], "depth": r["depth"], "params": r["params"],
              "error": f"{r['error_mean']:.4g} ± {r['error_std']:.2g}",
              "research log": f"{r.get('log_mean', float('nan')):.4g} ± {r.get('log_std', float('nan')):.2g}"}
             for r in rows]
    print(f"{args.layer} stacks, protocol {args.protocol}: {metric}; mean ± std over {args.seeds} seeds")
    print(format_table(table, cols))
    if baselines:
        print("baselines (MSE): " + ", ".join(f"{k} {v:.3g}" for k, v in baselines.items()))
    print(f"results: {out / 'results.json'}, plots: {out / 'error_vs_params.png'}, {out / 'curves.png'}")
    return 0
