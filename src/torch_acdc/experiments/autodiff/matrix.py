"""Part 4: derivatives at the matrix level against element-wise autodiff, on a linear StackedACDC (float64).

Claims tested: closed-form (matrix-level) Jacobians and Hessians are orders of magnitude faster than autodiff
assembling them entry by entry, with little gain for gradients; for large models Hessian-vector products
replace Hessians. Here: the Jacobian W by ``to_dense`` (one batched pass on the identity) against
``torch.func.jacrev`` / ``jacfwd`` and a loop of n backward calls; the Hessian 2 W^T W of ||W x + b - y||^2
against ``torch.func.hessian``; HVPs by double backward against the explicit Hessian; the gradient in closed
form against autograd.
"""
from __future__ import annotations

import torch
from torch.func import hessian, jacfwd, jacrev

from ...derivatives import hvp, least_squares_hessian, linear_jacobian
from ...layers import StackedACDC
from .timing import interleaved_medians
from ...progress import progress_bar

__all__ = ["GROUPS", "jacobian_by_loop", "measure_matrix"]

GROUPS = {
    "jacobian": ("closed form (to_dense)", "torch.func.jacrev", "torch.func.jacfwd", "loop of n backward calls"),
    "hessian": ("closed form 2 W^T W", "torch.func.hessian"),
    "hvp": ("double backward", "forward-over-reverse", "torch.func.hessian, then H v", "H v, H given"),
    "gradient": ("autograd", "closed form, W given", "closed form incl. to_dense"),
}


def jacobian_by_loop(f, x: torch.Tensor) -> torch.Tensor:
    """The Jacobian (out, n) of f at x (n,) row by row: one forward, then one backward call per output."""
    leaf = x.detach().requires_grad_()
    y = f(leaf)
    return torch.stack([torch.autograd.grad(y[i], leaf, retain_graph=True)[0] for i in range(y.shape[0])])


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def measure_matrix(ns, *, depth: int = 4, rounds: int = 3, min_sample: float = 0.005, seed: int = 0,
                   progress: bool = True) -> list[dict]:
    """One row per (n, group, method): median seconds (interleaved within the group), the ratio to the
    group's first method, and the relative error against the group's autodiff reference (jacrev /
    torch.func.hessian / explicit H v / autograd)."""
    rows = []
    for n in progress_bar(list(ns), desc="autodiff: matrix level", enabled=progress):
        torch.manual_seed(seed)
        stack = StackedACDC(n, n, depth, init="uniform").double()
        x, y, v = torch.randn(3, n, dtype=torch.float64).unbind(0)

        def loss(u):
            return (stack(u) - y).square().sum()

        with torch.no_grad():
            w = linear_jacobian(stack, check=False)
            b = stack(torch.zeros(n, dtype=torch.float64))
        h = hessian(loss)(x)
        leaf = x.clone().requires_grad_()
        grad_ref = torch.autograd.grad(loss(leaf), leaf)[0]

        def closed_grad(wm):
            return 2 * wm.T @ (wm @ x + b - y)

        fns = {
            "jacobian": {GROUPS["jacobian"][0]: lambda: linear_jacobian(stack, check=False),
                         GROUPS["jacobian"][1]: lambda: jacrev(stack)(x),
                         GROUPS["jacobian"][2]: lambda: jacfwd(stack)(x),
                         GROUPS["jacobian"][3]: lambda: jacobian_by_loop(stack, x)},
            "hessian": {GROUPS["hessian"][0]: lambda: least_squares_hessian(stack, check=False),
                        GROUPS["hessian"][1]: lambda: hessian(loss)(x)},
            "hvp": {GROUPS["hvp"][0]: lambda: hvp(loss, x, v, method="reverse"),
                    GROUPS["hvp"][1]: lambda: hvp(loss, x, v, method="forward"),
                    GROUPS["hvp"][2]: lambda: hessian(loss)(x) @ v,
                    GROUPS["hvp"][3]: lambda: h @ v},
            "gradient": {GROUPS["gradient"][0]: lambda: torch.autograd.grad(loss(leaf), leaf)[0],
                         GROUPS["gradient"][1]: lambda: closed_grad(w),
                         GROUPS["gradient"][2]: lambda: closed_grad(linear_jacobian(stack, check=False))},
        }
        refs = {"jacobian": jacrev(stack)(x), "hessian": h, "hvp": h @ v, "gradient": grad_ref}
        for group, methods in fns.items():
            times = interleaved_medians(methods, rounds=rounds, min_sample=min_sample)
            first = times[GROUPS[group][0]]
            for name, fn in methods.items():
                with torch.no_grad() if group in ("hessian",) and name.startswith("closed") else torch.enable_grad():
                    value = fn()
                rows.append({"n": n, "depth": depth, "group": group, "method": name, "seconds": times[name],
                             "over_first": times[name] / first, "rel_err": _err(value.detach(), refs[group])})
    return rows
