"""Compress a pretrained transformer: replace all-MiniLM-L6-v2's feed-forward Linears by ACDC stacks.

Under the comparison protocol of every family comparison (:mod:`torch_acdc.experiments.protocol`):

1. sentences: paragraphs of Python's bundled documentation (:func:`doc_sentences`), shuffled with ``seed``:
   ``train`` for fitting and distillation, the next ``val`` to choose the learning rate, the next ``eval``
   held out and reported (the retrieval set);
2. families replace ``encoder.layer.<i>.intermediate.dense`` (384 -> 1536) and ``encoder.layer.<i>.output.dense``
   (1536 -> 384) of the chosen blocks: ``acdc-d<k>`` by ``torch_acdc.convert`` (ACDC, depth k); ``acdc-d<k>+r<r>``
   by that stack plus a rank-r term (:class:`PlusLowRank`); ``svd-d<k>[+r<r>]`` by a factorisation
   ``Linear(in, q) -> Linear(q, out)`` from the truncated SVD with q chosen for the parameter count of the ACDC
   family of the same name;
3. each replacement is initialised by output matching on the layer's real inputs (rows captured from the
   original model on the training sentences; L-BFGS on ||f(X) - W X - b||^2 / ||W X + b||^2); that fit is set-up,
   not compute: it is cached per (family, seed) and outside every budget;
4. equal compute: one distillation step of every family is timed, interleaved, after warm-up; each budget of
   seconds becomes a step count per family; a job distils (Adam on the replacements only, loss 1 - cos(student,
   teacher embedding), checkpoints every ``checkpoint_every`` steps) to its largest count and is scored after
   each: validation cosine (chooses the LR, per family and budget) and held-out cosine, nearest-neighbour
   agreement @1 / @10 (reported, with the range over seeds);
5. beside the rows: the original model, the floor - the same blocks with their feed-forward layers removed (the
   residual stream passes through) - and a random-init ACDC stack (no fitting, no distillation).
"""
from __future__ import annotations

import copy
import re
import statistics
import time
import warnings
from pathlib import Path
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..conversion import convert
from ..cost import plan_inference
from ..fit import minimise
from . import hf, protocol
from ..progress import progress_bar
from ..training import CheckpointError, CheckpointManager, TrainState, load_checkpoint
from ..training.checkpoint import atomic_save

__all__ = ["CompressConfig", "CompressComparison", "PlusLowRank", "LR_GRIDS", "doc_sentences", "ffn_names",
           "capture_io", "fit_on_activations", "svd_factorisation", "svd_rank_for", "neighbour_agreement", "evaluate",
           "time_per_batch", "distil_step", "ffn_removed", "check_config", "parse_family"]


LR_GRIDS = {"acdc": [5e-3, 1e-2, 2e-2, 4e-2], "svd": [5e-4, 1e-3, 2e-3, 4e-3]}  # per kind (grown until chosen inside)
LOW_RANK_LR_SCALE = 0.2  # the rank-r term of an acdc-d<k>+r<r> family trains at this fraction of its LR


@dataclass
class CompressConfig:
    """One compress comparison (``blocks`` None: all six). ``hybrids``: "DEPTH:RANK" ACDC + low-rank families."""

    blocks: list[int] | None = None
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    hybrids: list[str] = field(default_factory=lambda: ["1:4"])
    train: int = 256
    val: int = 128
    eval: int = 256
    max_length: int = 64
    batch: int = 16
    fit_rows: int = 2048
    fit_steps: int = 20
    checkpoint_every: int = 20
    time_batch: int = 32
    time_repeats: int = 3
    seed: int = 0

    def families(self) -> list[str]:
        acdc = [f"acdc-d{d}" for d in self.depths] + [f"acdc-d{h.replace(':', '+r')}" for h in self.hybrids]
        return [f for a in acdc for f in (a, "svd" + a[4:])]


def parse_family(name: str) -> tuple[str, int, int]:
    """``'acdc-d2+r4'`` -> ('acdc', 2, 4); rank 0 without a low-rank term. ValueError naming the form."""
    m = re.fullmatch(r"(acdc|svd)-d(\d+)(?:\+r(\d+))?", name)
    if not m or int(m.group(2)) < 1 or (m.group(3) is not None and int(m.group(3)) < 1):
        raise ValueError(f"family {name!r}: expected acdc-d<DEPTH>, acdc-d<DEPTH>+r<RANK> or svd-... of the same")
    return m.group(1), int(m.group(2)), int(m.group(3) or 0)


def check_config(cfg: CompressConfig) -> None:
    """One ValueError naming the problem before any model is loaded."""
    if not cfg.depths or any(d < 1 for d in cfg.depths) or len(set(cfg.depths)) != len(cfg.depths):
        raise ValueError(f"depths must be distinct positive integers, got {cfg.depths}")
    for h in cfg.hybrids:
        if not re.fullmatch(r"[1-9]\d*:[1-9]\d*", h):
            raise ValueError(f"hybrid {h!r}: expected DEPTH:RANK with positive integers, e.g. 1:4")
    if len(set(cfg.hybrids)) != len(cfg.hybrids):
        raise ValueError(f"hybrids {cfg.hybrids} list one twice")
    if len(doc_sentences()) < cfg.train + cfg.val + cfg.eval:
        raise ValueError(f"asked for {cfg.train} + {cfg.val} + {cfg.eval} sentences, only {len(doc_sentences())} "
                         "available")


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


def distil_step(student: nn.Module, opt: torch.optim.Optimizer, batch: dict, target: torch.Tensor) -> float:
    """One Adam step of mean 1 - cos(student(batch), target); the loss before the step. Cost: one forward and
    backward of the student on one batch. The same function is timed by the timing pass."""
    loss = 1 - (hf.embed(student, batch) * target).sum(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------- run
class PlusLowRank(nn.Module):
    """``structured(x) + up(down(x))``: a structured layer with a rank-r correction, (..., in) -> (..., out).
    Parameters: the structured layer's + r * (in + out); cost O(structured) + O(r (in + out)) per row."""

    def __init__(self, structured: nn.Module, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.structured = structured
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.structured(x) + self.up(self.down(x))


def _variant(teacher: nn.Module, names: list[str], family: str, seed: int) -> tuple[nn.Module, dict]:
    """A copy of ``teacher`` with ``names`` replaced as ``family`` says (:func:`parse_family`), not fitted. A
    ``+r<r>`` term starts from the rank-r truncated SVD of the original weight; the ACDC stack from
    ``convert``'s initialisation (seeded)."""
    kind, depth, rank = parse_family(family)
    pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
    acdc, report = convert(teacher, pattern=pattern, depth=depth, min_features=1, seed=seed)
    info = {"family": family, "kind": kind, "depth": depth, "rank": rank, "fit_error": {}, "svd_ranks": {}}
    student = acdc if kind == "acdc" else copy.deepcopy(teacher)
    for r in report.replaced:
        original = teacher.get_submodule(r.name)
        if kind == "svd":  # the parameter count of the ACDC family of the same name
            q = svd_rank_for(_params(acdc.get_submodule(r.name)) + rank * (original.in_features + original.out_features),
                             original)
            student.set_submodule(r.name, svd_factorisation(original, q))
            info["svd_ranks"][r.name] = q
        elif rank:
            hybrid = PlusLowRank(acdc.get_submodule(r.name), original.in_features, original.out_features, rank)
            low = svd_factorisation(original, rank)
            with torch.no_grad():
                hybrid.down.weight.copy_(low[0].weight)
                hybrid.up.weight.copy_(low[1].weight)
            student.set_submodule(r.name, hybrid)
    return student, info


def _fit(student: nn.Module, names: list[str], io: dict, steps: int) -> dict[str, float]:
    """Fit each replaced layer in place to the original layer's captured inputs and outputs ``io`` (fitting to
    the partly replaced student's inputs was worse: an output layer cannot undo its input layer's error);
    {name: relative error}."""
    with torch.enable_grad():
        return {n: fit_on_activations(student.get_submodule(n), *io[n], steps) for n in names}


def _optimizer(student: nn.Module, names: list[str], lr: float) -> torch.optim.Adam:
    """Adam on the replaced layers only; a ``PlusLowRank`` term at ``LOW_RANK_LR_SCALE * lr``."""
    low, rest = [], []
    for n in names:
        layer = student.get_submodule(n)
        if isinstance(layer, PlusLowRank):
            rest += layer.structured.parameters()
            low += [*layer.down.parameters(), *layer.up.parameters()]
        else:
            rest += layer.parameters()
    groups = [{"params": rest, "lr": lr}] + ([{"params": low, "lr": lr * LOW_RANK_LR_SCALE}] if low else [])
    return torch.optim.Adam(groups, lr=lr)


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
    for n in names:  # intermediate.dense feeds only output.dense: both go (no parameters left)
        floor.set_submodule(n, _Removed(floor.get_submodule(n).out_features))
    return floor


class _Replaced(nn.Module):
    """The replaced layers of a student as one module (what a distillation checkpoint stores)."""

    def __init__(self, student: nn.Module, names: list[str]):
        super().__init__()
        self.layers = nn.ModuleList(student.get_submodule(n) for n in names)


class CompressComparison(protocol.Experiment):
    """ACDC, ACDC + low-rank and SVD replacements of the FFN layers under the comparison protocol: validation
    cosine chooses the LR; held-out cosine, NN@1 and NN@10 are reported."""

    name = "compress"
    val_metric = "val cosine"
    higher_is_better = True
    test_metrics = ("cosine", "nn@1", "nn@10")

    def __init__(self, cfg: CompressConfig):
        check_config(cfg)
        self.cfg = cfg
        self._loaded = None

    def settings(self) -> dict:
        """The configuration, without ``depths`` / ``hybrids``: they only choose the families (part of the grid,
        which a comparison may change - e.g. merge a subset of its families)."""
        return {k: v for k, v in asdict(self.cfg).items() if k not in ("depths", "hybrids")}

    def data(self) -> dict:
        """The model, the sentence batches, teacher targets and references, captured layer inputs (once)."""
        if self._loaded is None:
            cfg = self.cfg
            teacher, tokenizer = hf.load_minilm()
            for p in teacher.parameters():
                p.requires_grad_(False)
            train_s, val_s, eval_s = split_sentences(doc_sentences(), cfg.train, cfg.val, cfg.eval, seed=cfg.seed)
            d = {"teacher": teacher, "names": ffn_names(teacher, cfg.blocks), "all_ffn": ffn_names(teacher, None),
                 "train": _batches(tokenizer, train_s, cfg.batch, cfg.max_length),
                 "val": _batches(tokenizer, val_s, cfg.batch, cfg.max_length),
                 "eval": _batches(tokenizer, eval_s, cfg.batch, cfg.max_length),
                 "time": hf.tokenize(tokenizer, eval_s[:cfg.time_batch], cfg.max_length)}
            with torch.no_grad():
                d["targets"] = [hf.embed(teacher, b) for b in d["train"]]
            d["reference"], d["val_reference"] = _embed_all(teacher, d["eval"]), _embed_all(teacher, d["val"])
            fit_b = d["train"][:max(1, -(-cfg.fit_rows // (cfg.batch * 8)))]  # enough for fit_rows (>= 8 tokens each)
            d["io"] = capture_io(teacher, d["names"], fit_b, cfg.fit_rows, cfg.seed)
            self._loaded = d
        return self._loaded

    def student(self, family: str, seed: int, fit: bool, cache: Path | None = None) -> tuple[nn.Module, dict]:
        """The family's student for ``seed``, fitted (``fit``); with ``cache``, the fit is read from / written to
        that file (set-up shared by the LR grid's jobs, outside every budget)."""
        d = self.data()
        student, info = _variant(d["teacher"], d["names"], family, seed)
        if not fit:
            return student, info
        if cache is not None and cache.is_file():
            try:
                saved = load_checkpoint(cache)
                _Replaced(student, d["names"]).load_state_dict(saved["layers"])
                return student, saved["info"]
            except (CheckpointError, RuntimeError, KeyError) as e:
                warnings.warn(f"refitting: the cached fit {cache} is unusable ({e})", stacklevel=2)
        info["fit_error"] = _fit(student, d["names"], d["io"], self.cfg.fit_steps)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_save({"layers": _Replaced(student, d["names"]).state_dict(), "info": info}, cache)
        return student, info

    def step_functions(self, grid: protocol.Grid) -> dict:
        d = self.data()
        steps = {}
        for family in grid.families:
            student, _ = self.student(family, grid.seeds[0], fit=False)
            opt = _optimizer(student, d["names"], grid.grid(family)[0])
            box = {"i": 0}

            def step(student=student, opt=opt, box=box):
                i = box["i"] % len(d["train"])
                with torch.enable_grad():
                    distil_step(student, opt, d["train"][i], d["targets"][i])
                box["i"] += 1
            steps[family] = step
        return steps

    def train(self, family, lr, seed, counts, run_dir: Path, progress: bool) -> dict:
        d = self.data()
        student, info = self.student(family, seed, fit=True, cache=run_dir.parent.parent / "fits" / f"{family}-s{seed}.pt")
        after_fit = evaluate(student, d["eval"], d["reference"])
        opt = _optimizer(student, d["names"], lr)
        state = TrainState(CheckpointManager(run_dir / "checkpoints", keep=2), layers=_Replaced(student, d["names"]),
                           optimizer=opt)
        resumed = state.begin(resume=True, require_extra=("losses", "points"))
        step, losses, points = (0, [], []) if resumed is None else (resumed.step, *map(resumed.extra.get, ("losses", "points")))
        if resumed is not None:
            print(f"{protocol.job_name(family, lr, seed)}: resuming after step {step} from {resumed.path}")
        bar = progress_bar(total=counts[-1], initial=step, desc=protocol.job_name(family, lr, seed), enabled=progress,
                           leave=False)
        with torch.enable_grad():
            while step < counts[-1]:
                i = step % len(d["train"])
                losses.append(distil_step(student, opt, d["train"][i], d["targets"][i]))
                step += 1
                bar.update()
                if step in counts:
                    points.append({"step": step, "val": evaluate(student, d["val"], d["val_reference"])["cosine"],
                                   **evaluate(student, d["eval"], d["reference"])})
                if step % self.cfg.checkpoint_every == 0 or step == counts[-1]:
                    state.save(step, extra={"losses": losses, "points": points})
        bar.close()
        return {"info": info, "after_fit": after_fit, "points": points, "losses": losses}

    def describe(self, family: str) -> dict:
        kind, depth, rank = parse_family(family)
        student, info = self.student(family, self.cfg.seed, fit=False)
        d = self.data()
        return {"params": _ffn_params(student, d["names"]),
                "svd rank": (min(info["svd_ranks"].values()) if info["svd_ranks"] else "")}

    def facts(self, grid: protocol.Grid) -> dict:
        """Inference cost of each family's model: ms per embedding batch of ``time_batch`` sentences, and what
        the cost model would run at that size (``torch_acdc.cost.plan_inference``: dense or structured)."""
        d = self.data()
        tokens = int(d["time"]["attention_mask"].numel())
        out = {}
        for f in grid.families:
            model = self.student(f, grid.seeds[0], fit=False)[0]
            plan = [p.choice for p in plan_inference(model, tokens) if p.name in d["names"]]
            out[f] = {"ms/batch": round(1e3 * time_per_batch(model, d["time"], self.cfg.time_repeats), 1),
                      "cost model": "dense" if plan and all(c == "dense" for c in plan) else "structured"}
        return out

    def baselines(self) -> list[dict]:
        """The original model, the FFN-removed floor and a random-init ACDC stack: held-out metrics."""
        d = self.data()
        random_acdc, _ = self.student(f"acdc-d{self.cfg.depths[0]}", self.cfg.seed, fit=False)
        rows = []
        for label, model in (("original", d["teacher"]), ("FFN removed (floor)", ffn_removed(d["teacher"], d["names"])),
                             (f"acdc-d{self.cfg.depths[0]} random init", random_acdc)):
            rows.append({"variant": label, "params": _ffn_params(model, d["names"]),
                         **{k: round(v, 4) for k, v in evaluate(model, d["eval"], d["reference"]).items()}})
        return rows

    def plot(self, record: dict, out: Path) -> list[Path]:
        from .compress_report import plot_compress

        return [protocol.plot_against_compute(record, self, out / "equal_compute.png"),
                plot_compress(record, out / "compress.png")]
