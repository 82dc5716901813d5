"""Compress a pretrained transformer: replace all-MiniLM-L6-v2's feed-forward Linears by ACDC stacks.

Protocol (the equal-compute protocol of ``acdc charlm --sweep``, for a pretrained transformer):

1. sentences: paragraphs of Python's bundled documentation (:func:`doc_sentences`), shuffled with ``seed``:
   ``train`` for fitting and distillation, the next ``val`` to choose the learning rate, the next ``eval``
   held out and reported (the retrieval set);
2. replace ``encoder.layer.<i>.intermediate.dense`` (384 -> 1536) and ``encoder.layer.<i>.output.dense``
   (1536 -> 384) of the chosen blocks, by ``torch_acdc.convert`` (ACDC, depth k) or by a rank-r factorisation
   ``Linear(in, r) -> Linear(r, out)`` from the truncated SVD with r chosen for the same parameter count;
3. initialise each replacement by output matching on the layer's real inputs (rows captured from the
   original model on the training sentences; L-BFGS on ||f(X) - W X - b||^2 / ||W X + b||^2);
4. equal compute: one distillation step of every variant is timed, interleaved, after warm-up; each variant
   distils for ``distil_budget`` seconds of that measured cost (steps = budget / step cost);
5. distil end to end (Adam on the replacements only, loss 1 - cos(student, teacher embedding)) at every
   learning rate of ``lrs`` and every seed of ``seeds``; the learning rate is chosen per variant on the
   validation sentences (mean cosine over seeds); the held-out metrics at that rate are reported with their
   spread over seeds: mean cosine to the original embeddings and nearest-neighbour agreement @1 / @10;
6. beside every row: the original model and the floor - the same blocks with their feed-forward layers
   removed (the residual stream passes through) - and a random-init ACDC variant (no fitting).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..conversion import convert
from ..cost import plan_inference
from ..fit import minimise
from . import hf
from ..progress import progress_bar

__all__ = ["CompressConfig", "doc_sentences", "ffn_names", "capture_io", "fit_on_activations",
           "svd_factorisation", "svd_rank_for", "neighbour_agreement", "evaluate", "time_per_batch",
           "run_compress", "ffn_removed", "check_config"]


@dataclass
class CompressConfig:
    """One compress run (``blocks`` None: all six)."""

    blocks: list[int] | None = None
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    train: int = 256
    val: int = 128
    eval: int = 256
    max_length: int = 64
    batch: int = 16
    fit_rows: int = 2048
    fit_steps: int = 20
    distil_budget: float = 6.0  # seconds of measured distillation compute per variant
    lrs: list[float] = field(default_factory=lambda: [5e-4, 2e-3, 5e-3])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    timing_rounds: int = 5
    time_batch: int = 32
    time_repeats: int = 3
    seed: int = 0


def check_config(cfg: CompressConfig) -> None:
    """One ValueError naming the problem before any model is loaded."""
    if not cfg.lrs or any(not lr > 0 for lr in cfg.lrs) or len(set(cfg.lrs)) != len(cfg.lrs):
        raise ValueError(f"the learning-rate grid must be distinct positive numbers, got {cfg.lrs}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or any(x < 0 for x in cfg.seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {cfg.seeds}")
    if not cfg.distil_budget > 0:
        raise ValueError(f"distil_budget must be positive seconds, got {cfg.distil_budget}")
    if not cfg.depths or any(d < 1 for d in cfg.depths):
        raise ValueError(f"depths must be positive integers, got {cfg.depths}")


# ----------------------------------------------------------------------------------------------- data
def doc_sentences(min_chars: int = 40, max_chars: int = 400) -> list[str]:
    """Distinct paragraphs (whitespace collapsed) of ``pydoc_data.topics`` in sorted-topic order, with
    ``min_chars <= len <= max_chars``; ValueError if this Python lacks ``pydoc_data``."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ValueError("this Python has no pydoc_data module, the source of the sentences") from None
    seen, out = set(), []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            text = " ".join(para.split())
            if min_chars <= len(text) <= max_chars and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def split_sentences(sentences: list[str], *sizes: int, seed: int = 0) -> tuple[list[str], ...]:
    """Shuffle with ``seed`` and cut consecutive parts of ``sizes`` (e.g. train, validation, held out);
    ValueError if there are too few sentences."""
    if sum(sizes) > len(sentences):
        raise ValueError(f"asked for {' + '.join(map(str, sizes))} sentences, only {len(sentences)} available")
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    picked = [sentences[i] for i in order]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(picked[a:a + n] for a, n in zip(starts, sizes))


def _batches(tokenizer, sentences: list[str], size: int, max_length: int) -> list[dict]:
    return [hf.tokenize(tokenizer, sentences[i:i + size], max_length) for i in range(0, len(sentences), size)]


# ------------------------------------------------------------------------------------------- modules
def ffn_names(model: nn.Module, blocks: list[int] | None) -> list[str]:
    """Qualified names of the feed-forward Linears of ``blocks`` (all when None), in model order."""
    regex = re.compile(r"encoder\.layer\.(\d+)\.(intermediate|output)\.dense$")
    names = [(n, int(m.group(1))) for n, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and (m := regex.search(n))]
    available = sorted({b for _, b in names})
    if blocks is not None and not set(blocks) <= set(available):
        raise ValueError(f"blocks {sorted(set(blocks) - set(available))} do not exist; expected from {available}")
    return [n for n, b in names if blocks is None or b in blocks]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def capture_io(model: nn.Module, names: list[str], batches: list[dict], max_rows: int,
               seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (X (rows, in), Y (rows, out))}: inputs and outputs of each named Linear on the real (non-padding)
    tokens of ``batches``, at most ``max_rows`` rows sampled with ``seed``. One forward per batch."""
    store: dict[str, list] = {n: [] for n in names}
    mask_box = {}
    hooks = []
    for name in names:
        def hook(mod, args, output, name=name):
            keep = mask_box["mask"].reshape(-1).bool()
            store[name].append((args[0].reshape(-1, args[0].shape[-1])[keep], output.reshape(-1, output.shape[-1])[keep]))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        for batch in batches:
            mask_box["mask"] = batch["attention_mask"]
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, pairs in store.items():
        x, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_rows]
        out[name] = (x[idx], y[idx])
    return out


def fit_on_activations(module: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """L-BFGS on ||module(x) - y||^2 / ||y||^2 over all of ``module``'s parameters; returns the final relative
    error ||module(x) - y|| / ||y||. Cost per step: a few forward+backward passes on x (rows, in)."""
    scale = y.square().sum()

    def objective() -> torch.Tensor:
        return (module(x) - y).square().sum() / scale

    history = minimise(list(module.parameters()), objective, optimizer="lbfgs", steps=steps, lr=1.0,
                       transform=lambda v: max(v, 0.0) ** 0.5)
    module.zero_grad(set_to_none=True)
    return history[-1]


def svd_rank_for(params: int, linear: nn.Linear) -> int:
    """The rank r >= 1 whose factorisation Linear(in, r, bias=False) -> Linear(r, out) has the parameter count
    closest to ``params``."""
    per_rank = linear.in_features + linear.out_features
    bias = linear.out_features if linear.bias is not None else 0
    return max(1, round((params - bias) / per_rank))


def svd_factorisation(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Linear(in, r, bias=False) -> Linear(r, out) from the rank-``rank`` truncated SVD of the weight."""
    w = linear.weight.detach()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    down = nn.Linear(linear.in_features, rank, bias=False)
    up = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        down.weight.copy_(root[:, None] * vh[:rank])
        up.weight.copy_(u[:, :rank] * root)
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    return nn.Sequential(down, up)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


# ------------------------------------------------------------------------------------------- metrics
def neighbour_agreement(reference: torch.Tensor, other: torch.Tensor, k: int) -> float:
    """Mean |top-k(reference) ∩ top-k(other)| / k over queries, neighbours by cosine among the rows of each
    (n, dim) unit-norm set, self excluded. k = 1: fraction of queries with the same nearest neighbour."""
    n = reference.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} embeddings, got {k}")

    def topk(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.topk(k, dim=1).indices

    a, b = topk(reference), topk(other)
    hits = (a[:, :, None] == b[:, None, :]).any(-1).float().sum(1)
    return float((hits / k).mean())


@torch.no_grad()
def _embed_all(model: nn.Module, batches: list[dict]) -> torch.Tensor:
    return torch.cat([hf.embed(model, b) for b in batches])


def evaluate(model: nn.Module, batches: list[dict], reference: torch.Tensor) -> dict:
    """Mean cosine to ``reference`` (n, dim) embeddings of the same sentences, NN agreement @1 and @10."""
    emb = _embed_all(model, batches)
    return {"cosine": float((emb * reference).sum(-1).mean()), "nn@1": neighbour_agreement(reference, emb, 1),
            "nn@10": neighbour_agreement(reference, emb, min(10, len(emb) - 1))}


@torch.no_grad()
def time_per_batch(model: nn.Module, batch: dict, repeats: int) -> float:
    """Median seconds of one embedding forward on ``batch`` (after one warm-up call)."""
    hf.embed(model, batch)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        hf.embed(model, batch)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def distil(student: nn.Module, params: list[nn.Parameter], batches: list[dict], targets: list[torch.Tensor],
           steps: int, lr: float, progress: bool, desc: str) -> list[float]:
    """Adam on ``params`` for ``steps`` steps of mean 1 - cos(student(batch), target), cycling the batches;
    returns the loss per step. Cost per step: one forward+backward of the student on one batch."""
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for step in progress_bar(range(steps), desc=desc, enabled=progress, leave=False):
        i = step % len(batches)
        loss = 1 - (hf.embed(student, batches[i]) * targets[i]).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ---------------------------------------------------------------------------------------------- run
def _variant(teacher: nn.Module, names: list[str], kind: str, depth: int, io: dict, cfg: CompressConfig,
             fit: bool) -> tuple[nn.Module, dict]:
    """A copy of ``teacher`` with ``names`` replaced (kind 'acdc' or 'svd' at the depth-``depth`` ACDC count),
    each fitted (``fit``) to the original layer's captured inputs and outputs ``io``."""
    pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
    acdc, report = convert(teacher, pattern=pattern, depth=depth, min_features=1, seed=cfg.seed)
    info = {"kind": kind, "depth": depth, "fit_error": {}, "ranks": {}}
    student = acdc if kind == "acdc" else copy.deepcopy(teacher)
    for r in report.replaced:
        if kind == "svd":
            rank = svd_rank_for(r.params_after, teacher.get_submodule(r.name))
            _set_module(student, r.name, svd_factorisation(teacher.get_submodule(r.name), rank))
            info["ranks"][r.name] = rank
        if fit:  # each layer on the original model's inputs and outputs (fitting to the partly replaced
            x, y = io[r.name]  # student's inputs was worse: an output layer cannot undo its input layer's error)
            with torch.enable_grad():
                info["fit_error"][r.name] = fit_on_activations(student.get_submodule(r.name), x, y, cfg.fit_steps)
    return student, info


def _ffn_params(model: nn.Module, names: list[str]) -> int:
    return sum(_params(model.get_submodule(n)) for n in names)


class _Removed(nn.Module):
    """A feed-forward output layer removed: zeros of ``out`` features (the block's residual passes through)."""

    def __init__(self, out_features: int):
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


def ffn_removed(teacher: nn.Module, names: list[str]) -> nn.Module:
    """The floor: a copy of ``teacher`` whose feed-forward blocks among ``names`` contribute nothing."""
    floor = copy.deepcopy(teacher)
    for n in names:
        if n.endswith("output.dense"):
            _set_module(floor, n, _Removed(floor.get_submodule(n).out_features))
    return floor


def _distil_step_ms(students: dict, batches: list[dict], targets: list[torch.Tensor], names: list[str],
                    rounds: int) -> dict:
    """Median ms of one distillation step of each student (copies: the originals are untouched), measured
    interleaved after two warm-up steps each (native build, FFT plans, allocator outside the clock)."""
    runs = {}
    for key, student in students.items():
        s = copy.deepcopy(student)
        params = [p for n in names for p in s.get_submodule(n).parameters()]
        runs[key] = (s, torch.optim.Adam(params, lr=1e-4), [])

    def step(s, opt, i):
        loss = 1 - (hf.embed(s, batches[i % len(batches)]) * targets[i % len(batches)]).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.enable_grad():
        for i in range(2):
            for s, opt, _ in runs.values():
                step(s, opt, i)
        for i in range(rounds):
            for s, opt, times in runs.values():
                tic = time.perf_counter()
                step(s, opt, i)
                times.append((time.perf_counter() - tic) * 1e3)
    return {key: statistics.median(t) for key, (_, _, t) in runs.items()}


def run_compress(cfg: CompressConfig, progress: bool = True) -> dict:
    """Every variant (original; the FFN-removed floor; random ACDC; fitted + distilled ACDC per depth and SVD at
    its parameter count) under the equal-compute protocol: metrics, chosen learning rates, costs."""
    from ..bench import machine

    check_config(cfg)
    teacher, tokenizer = hf.load_minilm()
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_s, val_s, eval_s = split_sentences(doc_sentences(), cfg.train, cfg.val, cfg.eval, seed=cfg.seed)
    train_b = _batches(tokenizer, train_s, cfg.batch, cfg.max_length)
    val_b = _batches(tokenizer, val_s, cfg.batch, cfg.max_length)
    eval_b = _batches(tokenizer, eval_s, cfg.batch, cfg.max_length)
    time_b = hf.tokenize(tokenizer, eval_s[:cfg.time_batch], cfg.max_length)
    names = ffn_names(teacher, cfg.blocks)
    all_ffn = ffn_names(teacher, None)
    with torch.no_grad():
        targets = [hf.embed(teacher, b) for b in train_b]
    reference, val_reference = _embed_all(teacher, eval_b), _embed_all(teacher, val_b)
    fit_b = train_b[:max(1, -(-cfg.fit_rows // (cfg.batch * 8)))]  # enough batches for fit_rows (>= 8 tokens each)
    io = capture_io(teacher, names, fit_b, cfg.fit_rows, cfg.seed)
    tokens = int(time_b["attention_mask"].numel())

    def row(label: str, model: nn.Module, info: dict, losses=None) -> dict:
        plan = [asdict(d) | {"choice": d.choice} for d in plan_inference(model, tokens)
                if d.name in names]
        frozen_dense = bool(plan) and all(d["choice"] == "dense" for d in plan)
        return {"variant": label, **info, "params": _params(model), "ffn_params": _ffn_params(model, all_ffn),
                "replaced_params": _ffn_params(model, names), "seconds_per_batch":
                time_per_batch(model, time_b, cfg.time_repeats), **evaluate(model, eval_b, reference),
                "cost_model_plan": plan, "cost_model_choice": (None if not plan else
                                                               "dense" if frozen_dense else "structured"),
                "distil_loss": losses or []}

    rows = [row("original", teacher, {"kind": "dense", "depth": None}),
            row("FFN removed (floor)", ffn_removed(teacher, names), {"kind": "floor", "depth": None})]
    random_acdc, info = _variant(teacher, names, "acdc", cfg.depths[0], io, cfg, fit=False)
    rows.append(row(f"acdc-d{cfg.depths[0]} random init", random_acdc, info))
    variants = [(kind, depth) for depth in cfg.depths for kind in ("acdc", "svd")]
    fitted = {}
    for kind, depth in progress_bar(variants, desc="fit", enabled=progress):
        for seed in cfg.seeds:
            fitted[(kind, depth, seed)] = _variant(teacher, names, kind, depth, io,
                                                   dataclasses.replace(cfg, seed=seed), fit=True)
    step_ms = _distil_step_ms({v: fitted[(*v, cfg.seeds[0])][0] for v in variants}, train_b, targets, names,
                              cfg.timing_rounds)
    steps = {v: max(1, round(cfg.distil_budget * 1e3 / step_ms[v])) for v in variants}
    for kind, depth in progress_bar(variants, desc="distil", enabled=progress):
        label = f"{kind}-d{depth}" if kind == "acdc" else f"svd @ params of acdc-d{depth}"
        runs = {}
        for lr in cfg.lrs:
            for seed in cfg.seeds:
                student = copy.deepcopy(fitted[(kind, depth, seed)][0])
                params = [p for n in names for p in student.get_submodule(n).parameters()]
                with torch.enable_grad():
                    losses = distil(student, params, train_b, targets, steps[(kind, depth)], lr, False, label)
                runs[(lr, seed)] = (student, losses, evaluate(student, val_b, val_reference)["cosine"])
        def val_score(lr: float) -> float:  # validation only; a diverged (NaN) run ranks last
            score = statistics.mean(runs[(lr, s)][2] for s in cfg.seeds)
            return score if math.isfinite(score) else -math.inf

        best = max(cfg.lrs, key=val_score)
        per_seed = [evaluate(runs[(best, s)][0], eval_b, reference) for s in cfg.seeds]
        student, losses, _ = runs[(best, cfg.seeds[0])]
        info = fitted[(kind, depth, cfg.seeds[0])][1] | {
            "after_fit": evaluate(fitted[(kind, depth, cfg.seeds[0])][0], eval_b, reference), "chosen_lr": best,
            "distil_steps": steps[(kind, depth)], "step_ms": step_ms[(kind, depth)],
            "val_cosine": {f"{lr:g}": statistics.mean(runs[(lr, s)][2] for s in cfg.seeds) for lr in cfg.lrs},
            "spread": {m: [min(r[m] for r in per_seed), max(r[m] for r in per_seed)] for m in ("cosine", "nn@1", "nn@10")}}
        r = row(label, student, info, losses)
        r.update({m: statistics.mean(x[m] for x in per_seed) for m in ("cosine", "nn@1", "nn@10")})
        rows.append(r)
    return {"config": asdict(cfg), "replaced": names, "train_sentences": len(train_s), "val_sentences": len(val_s),
            "eval_sentences": len(eval_s), "time_batch_tokens": tokens, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": machine(), "rows": rows,
            "protocol": {"equal compute": f"each variant distils for {cfg.distil_budget:g} s of its own measured "
                                          f"step cost (median of {cfg.timing_rounds} interleaved steps after 2 "
                                          "warm-up steps)", "step_ms": {f"{k}-d{d}": v for (k, d), v in step_ms.items()},
                         "lr grid": cfg.lrs, "seeds": cfg.seeds, "lr choice": "per variant, highest mean "
                         "validation cosine over seeds", "validation sentences": len(val_s),
                         "held-out sentences": len(eval_s)}}
