"""Part 2: forward mode and finite differences against reverse mode, as the number of parameters m grows.

Claims tested: forward mode costs ~2x an evaluation per direction, so a full gradient by forward mode costs
~2m evaluations (here vmapped over the m basis directions in chunks); central finite differences cost 2m
evaluations and lose accuracy; reverse mode costs a constant times one evaluation, independent of m.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad, jvp, vmap

from ...layers import StackedACDC
from .timing import interleaved_medians
from ...progress import progress_bar

__all__ = ["flat_loss", "forward_gradient", "central_differences", "measure_forward"]


def flat_loss(model: torch.nn.Module, x: torch.Tensor):
    """(f, theta): f(theta) = mean(model(x)^2) with all parameters in one flat vector theta (m,)."""
    names, shapes = zip(*[(k, p.shape) for k, p in model.named_parameters()])
    sizes = [s.numel() for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t: torch.Tensor) -> torch.Tensor:
        params = {k: c.view(s) for k, c, s in zip(names, t.split(sizes), shapes)}
        return functional_call(model, params, (x,)).square().mean()

    return f, theta


def forward_gradient(f, theta: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """The gradient (m,) by forward mode: one jvp per basis direction, vmapped ``chunk`` at a time."""
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    return vmap(lambda e: jvp(f, (theta,), (e,))[1], chunk_size=chunk)(eye)


def central_differences(f, theta: torch.Tensor, h: float, chunk: int | None) -> torch.Tensor:
    """(f(theta + h e_i) - f(theta - h e_i)) / 2h for every i: 2m evaluations, vmapped ``chunk`` at a time."""
    steps = torch.eye(theta.numel(), dtype=theta.dtype) * h
    fv = vmap(f, chunk_size=chunk)
    return (fv(theta + steps) - fv(theta - steps)) / (2 * h)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


def measure_forward(ns, *, depth: int = 2, batch: int = 16, chunk: int = 256, fd_steps=(1e-2, 1e-4, 1e-6, 1e-8),
                    rounds: int = 3, min_sample: float = 0.01, seed: int = 0, progress: bool = True) -> list[dict]:
    """One row per width n of StackedACDC(n, n, depth, tanh): m = 3 depth n parameters; float32 timings
    (interleaved medians) of one evaluation, one jvp, the reverse gradient, the forward-mode gradient and
    central differences; relative errors of forward mode and of differences (float32 and float64, each step
    h) against the float64 reverse gradient."""
    rows = []
    for n in progress_bar(list(ns), desc="autodiff: forward mode", enabled=progress):
        torch.manual_seed(seed)
        model = StackedACDC(n, n, depth, activation="tanh")
        x = torch.randn(batch, n)
        f, theta = flat_loss(model, x)
        m = theta.numel()
        v = torch.randn(m)
        g_rev = grad(f)
        times = interleaved_medians({
            "eval": lambda: f(theta),
            "jvp (1 direction)": lambda: jvp(f, (theta,), (v,)),
            "reverse gradient": lambda: g_rev(theta),
            "forward-mode gradient": lambda: forward_gradient(f, theta, chunk),
            "central differences": lambda: central_differences(f, theta, 1e-3, chunk),
        }, rounds=rounds, min_sample=min_sample)
        f64, theta64 = flat_loss(model.double(), x.double())
        ref = grad(f64)(theta64)
        row = {"n": n, "depth": depth, "m": m, "batch": batch, "chunk": chunk,
               **{f"{k} s": t for k, t in times.items()},
               "jvp_over_eval": times["jvp (1 direction)"] / times["eval"],
               "reverse_over_eval": times["reverse gradient"] / times["eval"],
               "forward_gradient_over_eval": times["forward-mode gradient"] / times["eval"],
               "fd_over_eval": times["central differences"] / times["eval"],
               "forward_over_reverse": times["forward-mode gradient"] / times["reverse gradient"],
               "forward_gradient_rel_err_f32": _rel(forward_gradient(f, theta, chunk), ref),
               "forward_gradient_rel_err_f64": _rel(forward_gradient(f64, theta64, chunk), ref),
               "reverse_rel_err_f32": _rel(g_rev(theta), ref)}
        for h in fd_steps:
            row[f"fd_rel_err_f64_h{h:g}"] = _rel(central_differences(f64, theta64, h, chunk), ref)
            row[f"fd_rel_err_f32_h{h:g}"] = _rel(central_differences(f, theta, h, chunk), ref)
        rows.append(row)
    return rows
