"""Part 3: symbolic differentiation of a tiny LSTM character model (sympy) against reverse mode (autograd).

Model (``cells`` = hidden size = vocabulary size): character c_t -> one-hot x_t (cells,); gates
z = W[:, :, c_t] + U h + b with W, U (4, cells, cells), b (4, cells); i, f, o = sigmoid, g = tanh;
c' = f c + i g, h' = o tanh(c'); the loss sums the cross-entropy of softmax(h') against the next character.
Learned initial state h0, c0. Parameters 8 cells^2 + 6 cells: 44 for 2 cells, 702 for 9 cells. Characters of
"hello world!" are numbered by first appearance modulo ``cells`` (9 cells: the 9 distinct characters).

Claim tested: the symbolic gradient swells (node count, time to build, print and evaluate) while reverse mode
stays cheap. Each size runs in a forked child under a time limit; the stages it finished are reported.
"""
from __future__ import annotations

import math
import multiprocessing
import sys
import time

import torch

from .timing import interleaved_medians
from ...progress import progress_bar

__all__ = ["TEXT", "char_indices", "param_shapes", "param_count", "torch_loss", "sympy_loss", "tree_size",
           "symbolic_gradient_job", "measure_symbolic"]

TEXT = "hello world!"
STAGES = ("loss built", "gradient built", "nodes counted", "lambdified", "evaluated")


def char_indices(text: str, cells: int) -> list[int]:
    """Each character's index of first appearance in ``text``, modulo ``cells``."""
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    order = list(dict.fromkeys(text))
    return [order.index(ch) % cells for ch in text]


def param_shapes(cells: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, in the flat order used everywhere here."""
    return {"W": (4, cells, cells), "U": (4, cells, cells), "b": (4, cells), "h0": (cells,), "c0": (cells,)}


def param_count(cells: int) -> int:
    return sum(math.prod(s) for s in param_shapes(cells).values())


def _lstm_loss(p: dict, tokens: list[int], cells: int, ops) -> object:
    """The loss with elementwise scalar arithmetic over ``ops`` (sigmoid, tanh, exp, log) - shared by both."""
    sig, tanh, exp, log = ops
    h, c = list(p["h0"]), list(p["c0"])
    loss = 0
    for t in range(len(tokens) - 1):
        z = [[p["W"][g][j][tokens[t]] + sum(p["U"][g][j][k] * h[k] for k in range(cells)) + p["b"][g][j]
              for j in range(cells)] for g in range(4)]
        i, f, o = ([sig(v) for v in z[g]] for g in range(3))
        gg = [tanh(v) for v in z[3]]
        c = [f[j] * c[j] + i[j] * gg[j] for j in range(cells)]
        h = [o[j] * tanh(c[j]) for j in range(cells)]
        loss = loss + log(sum(exp(v) for v in h)) - h[tokens[t + 1]]
    return loss


def _nested(flat, cells: int) -> dict:
    """Flat sequence of 8 cells^2 + 6 cells values -> nested lists shaped like :func:`param_shapes`."""
    out, pos = {}, 0
    for name, shape in param_shapes(cells).items():
        size = math.prod(shape)
        chunk = list(flat[pos : pos + size])
        pos += size
        for dim in reversed(shape[1:]):
            chunk = [chunk[i : i + dim] for i in range(0, len(chunk), dim)]
        out[name] = chunk
    return out


def torch_loss(theta: torch.Tensor, tokens: list[int], cells: int) -> torch.Tensor:
    """The loss from a flat parameter tensor (m,), vectorised torch ops (differentiated by autograd)."""
    shapes = param_shapes(cells)
    parts = dict(zip(shapes, (c.view(s) for c, s in zip(theta.split([math.prod(s) for s in shapes.values()]),
                                                        shapes.values()))))
    h, c = parts["h0"], parts["c0"]
    loss = theta.new_zeros(())
    for t in range(len(tokens) - 1):
        z = parts["W"][:, :, tokens[t]] + parts["U"] @ h + parts["b"]
        i, f, o = torch.sigmoid(z[:3]).unbind(0)
        c = f * c + i * torch.tanh(z[3])
        h = o * torch.tanh(c)
        loss = loss + torch.logsumexp(h, 0) - h[tokens[t + 1]]
    return loss


def sympy_functions():
    """(sigmoid, tanh, exp, log) as sympy Functions that know only their derivative, and the lambdify
    namespace that evaluates them. (sympy's own tanh/exp make every ``diff`` step query the assumption
    system on the whole subexpression, which is slower still; these keep ``diff`` purely structural.)"""
    import sympy

    class sigmoid(sympy.Function):
        def fdiff(self, argindex=1):
            return sigmoid(self.args[0]) * (1 - sigmoid(self.args[0]))

    class tanh(sympy.Function):
        def fdiff(self, argindex=1):
            return 1 - tanh(self.args[0]) ** 2

    class exp(sympy.Function):
        def fdiff(self, argindex=1):
            return exp(self.args[0])

    class log(sympy.Function):
        def fdiff(self, argindex=1):
            return 1 / self.args[0]

    namespace = {"sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)), "tanh": math.tanh, "exp": math.exp,
                 "log": math.log}
    return (sigmoid, tanh, exp, log), namespace


def sympy_loss(symbols, tokens: list[int], cells: int, functions=None):
    """The same loss as a sympy expression of the flat parameter symbols (sympy's automatic canonicalisation
    only, no simplification). ``functions``: the (sigmoid, tanh, exp, log) of :func:`sympy_functions`."""
    return _lstm_loss(_nested(symbols, cells), tokens, cells, functions or sympy_functions()[0])


def tree_size(exprs) -> tuple[int, int]:
    """(tree nodes, distinct subexpressions) of sympy expressions: the printed size and the shared DAG size.
    Memoised on subexpressions, so linear in the DAG size even when the tree is exponentially larger."""
    sizes: dict = {}

    def size(e):
        s = sizes.get(e)
        if s is None:
            s = sizes[e] = 1 + sum(size(a) for a in e.args)
        return s

    return sum(size(e) for e in exprs), len(sizes)


def symbolic_gradient_job(cells: int, tokens: list[int], values: list[float], send) -> None:
    """Child process: build the loss and its gradient with sympy, count, lambdify, evaluate at ``values``;
    ``send((stage, info))`` after every stage of :data:`STAGES`."""
    import sympy

    sys.setrecursionlimit(1_000_000)
    symbols = sympy.symbols(f"p0:{param_count(cells)}")
    functions, namespace = sympy_functions()
    t0 = time.perf_counter()
    loss = sympy_loss(symbols, tokens, cells, functions)
    send(("loss built", {"seconds": time.perf_counter() - t0, "loss_tree_nodes": tree_size([loss])[0]}))
    t0 = time.perf_counter()
    grads = [sympy.diff(loss, s) for s in symbols]
    send(("gradient built", {"seconds": time.perf_counter() - t0}))
    t0 = time.perf_counter()
    tree, dag = tree_size(grads)
    send(("nodes counted", {"seconds": time.perf_counter() - t0, "gradient_tree_nodes": tree,
                            "gradient_dag_nodes": dag}))
    t0 = time.perf_counter()
    fn = sympy.lambdify(symbols, grads, modules=[namespace, "math"])
    send(("lambdified", {"seconds": time.perf_counter() - t0}))
    t0 = time.perf_counter()
    out = fn(*values)
    send(("evaluated", {"seconds": time.perf_counter() - t0, "gradient": [float(v) for v in out]}))


def _run_limited(cells, tokens, values, limit: float) -> tuple[dict, str]:
    """Run :func:`symbolic_gradient_job` in a forked child for at most ``limit`` s: (stage -> info, status)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=symbolic_gradient_job, args=(cells, tokens, values, send.send), daemon=True)
    proc.start()
    send.close()
    done: dict = {}
    deadline = time.perf_counter() + limit
    status = "finished"
    while len(done) < len(STAGES):
        left = deadline - time.perf_counter()
        if left <= 0 or not recv.poll(left):
            status = "time limit" if proc.is_alive() else f"child exited (code {proc.exitcode})"
            break
        try:
            stage, info = recv.recv()
        except EOFError:
            proc.join(1)
            status = f"child exited (code {proc.exitcode})"
            break
        done[stage] = info
    if proc.is_alive():
        proc.kill()
    proc.join()
    return done, status


def _blocked(failed: list[tuple[int, int]], chars: int, cells: int):
    """The failed (chars, cells) that makes this size hopeless: one no larger in both."""
    return next(((c, k) for c, k in failed if c <= chars and k <= cells), None)


def measure_symbolic(cells_list, chars_list=(len(TEXT),), *, text: str = TEXT, limit: float = 60.0,
                     rounds: int = 5, seed: int = 0, progress: bool = True) -> list[dict]:
    """One row per (chars, cells): the model on the first ``chars`` characters of ``text``; parameter count,
    symbolic stages reached (node counts, seconds per stage) under ``limit`` s, the reverse-mode time (float64
    autograd) of the same loss and parameters, and the largest relative difference of the two gradients.
    A size at least as large (in both) as one that missed its limit is not attempted."""
    rows, failed = [], []
    jobs = [(c, k) for c in chars_list for k in cells_list]
    for chars, cells in progress_bar(jobs, desc="autodiff: symbolic LSTM", enabled=progress):
        if not 2 <= chars <= len(text):
            raise ValueError(f"chars must be in [2, {len(text)}] (one prediction at least), got {chars}")
        tokens = char_indices(text, cells)[:chars]
        theta = torch.randn(param_count(cells), generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64) * 0.5
        leaf = theta.clone().requires_grad_()
        ref = torch.autograd.grad(torch_loss(leaf, tokens, cells), leaf)[0]
        times = interleaved_medians({
            "eval": lambda: torch_loss(theta, tokens, cells),
            "grad": lambda: torch.autograd.grad(torch_loss(leaf, tokens, cells), leaf)}, rounds=rounds)
        row = {"chars": chars, "cells": cells, "params": param_count(cells), "limit_s": limit,
               "autograd_eval_s": times["eval"], "autograd_grad_s": times["grad"], "stages": {}}
        blocker = _blocked(failed, chars, cells)
        if blocker is not None:
            rows.append({**row, "status": f"not attempted ({blocker[0]} chars, {blocker[1]} cells hit the limit)"})
            continue
        done, status = _run_limited(cells, tokens, theta.tolist(), limit)
        row.update(status=status, stages={k: {kk: vv for kk, vv in v.items() if kk != "gradient"}
                                          for k, v in done.items()})
        for stage, info in done.items():
            row[f"{stage} s"] = info["seconds"]
        row.update({k: v for info in done.values() for k, v in info.items() if k.endswith("nodes")})
        if "evaluated" in done:
            sym = torch.tensor(done["evaluated"]["gradient"], dtype=torch.float64)
            row["max_rel_diff_vs_autograd"] = ((sym - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()
            row["symbolic_total_s"] = sum(info["seconds"] for info in done.values())
        else:
            failed.append((chars, cells))
        rows.append(row)
    return rows
