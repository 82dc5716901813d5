"""Character-level LSTM language model (truncated BPTT): dense nn.LSTM vs ACDCLSTM, validation bits per char.

Model: embedding -> LSTM (``--model dense``: nn.LSTM, ``--model acdc``: torch_acdc.recurrent.ACDCLSTM) ->
linear decoder. ``--batch`` parallel streams read the training text ``--bptt`` characters per step, each
carrying its (h, c) across steps (detached); validation bits per character are measured on the last
``--val-fraction`` of the text. Writes results.json and curves.png (train and validation BPC vs step) into the
run folder and prints a summary table; ``--sample N`` prints N generated characters (seeded).

Resumable: a checkpoint (model, optimizer, RNG, stream offsets and carried state) is written atomically every
``--checkpoint-every`` steps; ``--resume`` continues from the newest readable one. Distributed: run the same
command under ``torchrun --nproc_per_node=N`` (DDP; ``--batch`` streams are split over the processes).
``--compare`` trains dense and ACDC at equal hidden size and at equal parameter count, one sub-folder each.
Without ``--data`` the text is Python's own documentation (pydoc_data.topics), so nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..recipe import param_groups
from ..training import CheckpointError, CheckpointManager, DistContext, StreamBatches, TrainState
from .common import integer_axis, line_style, new_figure, save_figure, seed_everything, set_title, write_json
from .stdlib_corpus import STDLIB_CORPUS, read_stdlib_text
from ..progress import progress_bar

__all__ = ["CharLM", "CharLMConfig", "Corpus", "read_text", "encode", "load_corpus", "count_parameters",
           "hidden_for_params", "evaluate_bpc", "sample_text", "train_charlm", "compare_charlm"]

BUILTIN_CORPUS = "builtin:pydoc-topics"
MODELS = ("dense", "acdc")
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Corpus:
    """A text split into train/validation token tensors (LongTensor (n,)) over the sorted character set."""

    vocab: str
    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    test: torch.Tensor | None = None  # a second held-out split (reported, never used to choose anything)

    def encode(self, text: str) -> torch.Tensor:
        return encode(text, self.vocab)


def encode(text: str, vocab: str) -> torch.Tensor:
    """LongTensor (len(text),) of each character's index in ``vocab``; ValueError for unknown characters."""
    index = {c: i for i, c in enumerate(vocab)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise ValueError(f"characters {missing!r} are not in the corpus vocabulary")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def read_text(data: str | None) -> str:
    """The UTF-8 text of file ``data``, or Python's bundled documentation text when ``data`` is None."""
    if data == STDLIB_CORPUS:
        return read_stdlib_text()
    if data is None or data == BUILTIN_CORPUS:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip it from the standard library
            raise ValueError("this Python has no pydoc_data module for the built-in text; pass --data FILE.txt") \
                from None
        return "\n\n".join(topics[key] for key in sorted(topics))
    try:
        return Path(data).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--data {data} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise ValueError(f"--data {data} cannot be read ({e.strerror or e})") from None


def load_corpus(data: str | None, val_fraction: float, max_chars: int | None = None,
                val_max_chars: int | None = None, test_chars: int | None = None) -> Corpus:
    """Read, truncate to ``max_chars``, and split off the last ``val_fraction`` of the text for validation
    (of which only the first ``val_max_chars`` characters are kept, if given); with ``test_chars``, the next
    ``test_chars`` held-out characters are a test split. ValueError if the held-out text is too short."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = read_text(data)
    if max_chars is not None:
        text = text[:max_chars]
    vocab = "".join(sorted(set(text)))
    tokens = encode(text, vocab)
    cut = int(round(len(tokens) * (1 - val_fraction)))
    held_out = len(tokens) - cut
    if test_chars is not None and (val_max_chars is None or held_out < val_max_chars + test_chars):
        raise ValueError(f"the corpus is too small: its held-out part ({val_fraction:.0%} of {len(tokens)} chars) has "
                         f"{held_out} characters, the validation and test splits need {val_max_chars} + {test_chars}")
    val = tokens[cut:] if val_max_chars is None else tokens[cut:cut + val_max_chars]
    test = None if test_chars is None else tokens[cut + val_max_chars:cut + val_max_chars + test_chars]
    return Corpus(vocab, tokens[:cut], val, hashlib.sha256(text.encode()).hexdigest(), test)


# ---------------------------------------------------------------------------------------------- model
class CharLM(nn.Module):
    """Embedding (vocab_size -> embed_dim) -> LSTM (hidden_size, num_layers) -> Linear (-> vocab_size).

    ``kind``: 'dense' (nn.LSTM) or 'acdc' (ACDCLSTM with ``depth`` ACDC layers per gate transform).
    ``forward(tokens, state=None) -> (logits, state)``: tokens LongTensor (B, T), logits (B, T, vocab_size),
    state ``(h, c)`` each (num_layers, B, hidden_size). Cost per character O(H^2) dense, O(H log H) ACDC,
    plus O(H * vocab_size) for the decoder.
    """

    def __init__(self, vocab_size: int, hidden_size: int, embed_dim: int = 32, num_layers: int = 1,
                 kind: str = "dense", depth: int = 2, permutation="random", dropout: float = 0.0,
                 device=None, dtype=None):
        super().__init__()
        if kind not in MODELS:
            raise ValueError(f"unknown model kind {kind!r}: expected one of {MODELS}")
        kw = {"device": device, "dtype": dtype}
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, embed_dim, **kw)
        if kind == "dense":
            self.rnn = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout, **kw)
        else:
            from ..recurrent import ACDCLSTM

            self.rnn = ACDCLSTM(embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout,
                                depth=depth, permutation=permutation, **kw)
        self.decoder = nn.Linear(hidden_size, vocab_size, **kw)

    def reset_parameters(self) -> None:
        for module in (self.embed, self.rnn, self.decoder):
            module.reset_parameters()

    def forward(self, tokens: torch.Tensor, state=None):
        output, state = self.rnn(self.embed(tokens), state)
        return self.decoder(output), state

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def _model_kwargs(cfg: "CharLMConfig", vocab_size: int, hidden: int | None = None, kind: str | None = None):
    return {"vocab_size": vocab_size, "hidden_size": hidden or cfg.hidden, "embed_dim": cfg.embed,
            "num_layers": cfg.layers, "kind": kind or cfg.model, "depth": cfg.depth,
            "permutation": cfg.permutation, "dropout": cfg.dropout}


def count_parameters(**model_kwargs) -> tuple[int, int]:
    """(total, recurrent) parameter counts of ``CharLM(**model_kwargs)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = CharLM(**model_kwargs)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.rnn.parameters())


def hidden_for_params(budget: int, **model_kwargs) -> int:
    """The hidden size whose CharLM total parameter count is closest to ``budget`` (counts grow with H)."""
    def total(h: int) -> int:
        return count_parameters(**{**model_kwargs, "hidden_size": h})[0]

    hi = 1
    while total(hi) < budget:
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # smallest h with total(h) >= budget
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if total(mid) < budget else (lo, mid)
    return lo if lo == 1 or total(lo) - budget <= budget - total(lo - 1) else lo - 1


# ------------------------------------------------------------------------------------ evaluation, sampling
@torch.no_grad()
def evaluate_bpc(model: nn.Module, batches: StreamBatches, ctx: DistContext) -> float:
    """Mean cross-entropy in bits per character over every chunk of ``batches`` (epoch 0), all ranks pooled."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # (sum of nats, number of characters)
    state = None
    for step in range(batches.chunks_per_epoch):
        chunk = batches.batch(step)
        logits, state = model(chunk.inputs.to(ctx.device), state)
        targets = chunk.targets.to(ctx.device)
        logits = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
        total[0] += F.cross_entropy(logits, targets.flatten(), reduction="sum").double()
        total[1] += targets.numel()
    model.train(was_training)
    nats, count = ctx.all_reduce_sum(total).tolist()
    return nats / count / LN2


@torch.no_grad()
def sample_text(model: nn.Module, corpus: Corpus, length: int, prime: str = "\n", temperature: float = 0.8,
                seed: int = 0) -> str:
    """``length`` characters drawn one at a time after feeding ``prime`` (seeded; model left in eval mode)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    device = next(model.parameters()).device
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    logits, state = model(corpus.encode(prime)[None].to(device))
    out = []
    for _ in range(length):
        probs = torch.softmax(logits[0, -1].float().cpu() / temperature, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(corpus.vocab[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    return "".join(out)


# ------------------------------------------------------------------------------------------- training
@dataclass
class CharLMConfig:
    """One training run. Fields in :data:`RESUME_MUST_MATCH` must be unchanged by ``--resume``."""

    data: str = BUILTIN_CORPUS
    max_chars: int | None = None
    val_fraction: float = 0.1
    model: str = "dense"
    hidden: int = 64
    embed: int = 32
    layers: int = 1
    depth: int = 2
    permutation: str | None = "random"
    dropout: float = 0.0
    batch: int = 64
    bptt: int = 32
    steps: int = 600
    lr: float = 2e-3
    lr_mult: float | None = None
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    val_every: int = 50
    val_pow2: bool = False  # also validate after steps 1, 2, 4, 8, ... (comparisons at equal steps)
    val_max_chars: int | None = None  # validate on the first N held-out characters only
    time_budget: float | None = None  # stop once this many seconds of training steps have run
    val_at: tuple[int, ...] | None = None  # also validate (and test, with test_chars) after these steps
    test_chars: int | None = None  # a test split of this many held-out characters after the validation split
    checkpoint_every: int = 50
    keep: int = 2
    sample: int = 300
    temperature: float = 0.8


RESUME_MUST_MATCH = ("data", "max_chars", "val_fraction", "val_max_chars", "test_chars", "model", "hidden", "embed", "layers", "depth",
                     "permutation", "dropout", "batch", "bptt", "lr", "lr_mult", "weight_decay", "clip", "seed")


def _check_resumable(saved: dict, cfg: CharLMConfig, corpus: Corpus, path) -> None:
    diff = [f"{k}: checkpoint {saved['config'].get(k)!r}, now {getattr(cfg, k)!r}" for k in RESUME_MUST_MATCH
            if saved["config"].get(k) != getattr(cfg, k)]
    if saved["text_sha256"] != corpus.sha256:
        diff.append("the training text differs")
    if diff:
        raise CheckpointError(path, "was written by a different run configuration (" + "; ".join(diff) + ")")


def _state_shard(state, ctx: DistContext, local_streams: int):
    """This rank's streams (dim 1) of a gathered (h, c) state; None stays None."""
    if state is None:
        return None
    rows = slice(ctx.rank * local_streams, (ctx.rank + 1) * local_streams)
    return tuple(s[:, rows].to(ctx.device) for s in state)


@dataclass
class _Progress:
    """What a run accumulates and a checkpoint must carry besides model and optimizer."""

    step: int = 0
    hidden: tuple | None = None  # this rank's carried (h, c)
    history: dict = dataclasses.field(
        default_factory=lambda: {"step": [], "train_bpc": [], "val_step": [], "val_bpc": [], "val_seconds": []})
    train_seconds: float = 0.0
    resumed_from: int | None = None


def _resume(state: TrainState, cfg: CharLMConfig, corpus: Corpus, train: StreamBatches, ctx: DistContext,
            label: str) -> _Progress:
    """Restore the newest checkpoint (if any) after checking it belongs to this configuration."""
    r = state.begin(resume=True, require_data=("offsets", "hidden"),
                    require_extra=("config", "text_sha256", "history", "train_seconds"))
    if r is None:
        if ctx.is_main:
            print(f"{label}: no checkpoint in {state.checkpoints.directory}, starting at step 0")
        return _Progress()
    _check_resumable(r.extra, cfg, corpus, r.path)
    if r.step > cfg.steps:
        raise ValueError(f"--steps {cfg.steps} is before the checkpoint's step {r.step} ({r.path})")
    if not torch.equal(r.data["offsets"], train.offsets(r.step)):
        raise CheckpointError(r.path, "its stream offsets do not match this run's data order")
    if ctx.is_main:
        print(f"{label}: resuming after step {r.step} from {r.path}")
    return _Progress(r.step, _state_shard(r.data["hidden"], ctx, train.local_streams), r.extra["history"],
                     r.extra["train_seconds"], r.step)


def train_step(net, model, optimizer, chunk, hidden, cfg: CharLMConfig, ctx: DistContext):
    """One optimizer step on ``chunk`` from the carried state ``hidden`` (None at a stream's start): forward,
    cross-entropy, backward, gradient clipping, Adam step. Returns (loss, new state with its graph). The same
    function is timed by the equal-compute protocol's timing pass."""
    net.train()
    logits, new_hidden = net(chunk.inputs.to(ctx.device), None if chunk.first else hidden)
    loss = F.cross_entropy(logits.flatten(0, 1), chunk.targets.flatten().to(ctx.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    optimizer.step()
    return loss, new_hidden


def build_training(cfg: CharLMConfig, vocab_size: int, ctx: DistContext):
    """(model, wrapped model, Adam over the recipe's parameter groups) of a configuration."""
    seed_everything(cfg.seed)  # the same initial model on every rank
    model = CharLM(**_model_kwargs(cfg, vocab_size), device=ctx.device)
    seed_everything(cfg.seed + ctx.rank)  # per-rank streams for dropout
    net = ctx.wrap(model)
    mult = None if cfg.lr_mult is None else {"A": cfg.lr_mult, "D": cfg.lr_mult}
    optimizer = torch.optim.Adam(param_groups(model, cfg.lr, cfg.weight_decay, mult), lr=cfg.lr)
    return model, net, optimizer


def train_charlm(cfg: CharLMConfig, run_dir: str | Path, ctx: DistContext | None = None, resume: bool = False,
                 progress: bool = True, label: str = "charlm", overwrite: bool = False) -> dict:
    """Train one model as configured; checkpoints in ``run_dir/checkpoints``. Returns the results dict
    (identical on every rank); rank 0 also writes ``run_dir/results.json`` and ``run_dir/curves.png``."""
    ctx = ctx or DistContext()
    run_dir = Path(run_dir)
    corpus = load_corpus(cfg.data, cfg.val_fraction, cfg.max_chars, cfg.val_max_chars, cfg.test_chars)
    train = StreamBatches(corpus.train, cfg.batch, cfg.bptt, cfg.seed, ctx.rank, ctx.world_size)
    val = StreamBatches(corpus.val, cfg.batch, cfg.bptt, cfg.seed, ctx.rank, ctx.world_size, shuffle=False)
    test = None if corpus.test is None else StreamBatches(corpus.test, cfg.batch, cfg.bptt, cfg.seed, ctx.rank,
                                                          ctx.world_size, shuffle=False)
    val_at = set(cfg.val_at or ())

    model, net, optimizer = build_training(cfg, len(corpus.vocab), ctx)
    state = TrainState(CheckpointManager(run_dir / "checkpoints", keep=cfg.keep), ctx,
                       model=model, optimizer=optimizer)
    if resume:
        run = _resume(state, cfg, corpus, train, ctx, label)
    else:
        state.begin(resume=False, overwrite=overwrite)  # refuses another run's checkpoints
        run = _Progress()
    history = run.history

    def checkpoint() -> None:
        gathered = None if run.hidden is None else tuple(ctx.all_gather_cat(s, dim=1).cpu() for s in run.hidden)
        state.save(run.step, data={"offsets": train.offsets(run.step), "hidden": gathered},
                   extra={"config": dataclasses.asdict(cfg), "text_sha256": corpus.sha256, "history": history,
                          "train_seconds": run.train_seconds})

    bar = progress_bar(range(run.step, cfg.steps), initial=run.step, total=cfg.steps, desc=label, unit="step",
               enabled=(progress and ctx.is_main), dynamic_ncols=True)
    for step in bar:
        if cfg.time_budget is not None and run.train_seconds >= cfg.time_budget:
            break  # resumed after the budget was spent
        tic = time.perf_counter()
        loss, hidden = train_step(net, model, optimizer, train.batch(step), run.hidden, cfg, ctx)
        run.hidden = tuple(s.detach() for s in hidden)  # truncated BPTT: carry the state, not its graph
        run.train_seconds += time.perf_counter() - tic
        run.step = step + 1
        history["step"].append(run.step)
        history["train_bpc"].append(ctx.all_reduce_sum(loss.detach()).item() / ctx.world_size / LN2)
        out_of_time = cfg.time_budget is not None and run.train_seconds >= cfg.time_budget
        last = run.step == cfg.steps or out_of_time
        if (run.step % cfg.val_every == 0 or last or run.step in val_at
                or (cfg.val_pow2 and run.step & (run.step - 1) == 0)):
            history["val_step"].append(run.step)
            history["val_bpc"].append(evaluate_bpc(model, val, ctx))
            history.setdefault("val_seconds", []).append(run.train_seconds)
            if test is not None:
                history.setdefault("test_bpc", []).append(evaluate_bpc(model, test, ctx))
            bar.set_postfix(train=f"{history['train_bpc'][-1]:.3f}", val=f"{history['val_bpc'][-1]:.3f}")
        if run.step % cfg.checkpoint_every == 0 or last:
            checkpoint()
        if out_of_time:
            break
    bar.close()

    total, recurrent = count_parameters(**_model_kwargs(cfg, len(corpus.vocab)))
    results = {
        "label": label, "config": dataclasses.asdict(cfg), "world_size": ctx.world_size,
        "parameters": total, "recurrent_parameters": recurrent, "vocab_size": len(corpus.vocab),
        "train_chars": len(corpus.train), "val_chars": len(corpus.val),
        "test_chars": None if corpus.test is None else len(corpus.test), "history": history,
        "final_val_bpc": history["val_bpc"][-1] if history["val_bpc"] else None,
        "best_val_bpc": min(history["val_bpc"]) if history["val_bpc"] else None,
        "train_seconds": run.train_seconds, "resumed_from_step": run.resumed_from,
        "steps_done": run.step,
        "chars_per_second": run.step * cfg.batch * cfg.bptt / run.train_seconds if run.train_seconds else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if ctx.is_main:
        if cfg.sample:
            prime = "\n" if "\n" in corpus.vocab else corpus.vocab[0]
            results["sample"] = sample_text(model, corpus, cfg.sample, prime, cfg.temperature, cfg.seed)
        write_json(run_dir / "results.json", results)
        plot_curves([results], run_dir / "curves.png")
    return results


# -------------------------------------------------------------------------------------- comparison
def compare_configs(cfg: CharLMConfig, vocab_size: int) -> list[tuple[str, str, CharLMConfig]]:
    """(label, comparison, config): dense and ACDC at ``cfg.hidden``, then each re-sized to the other's
    total parameter count."""
    dense, acdc = dataclasses.replace(cfg, model="dense"), dataclasses.replace(cfg, model="acdc")
    n_dense = count_parameters(**_model_kwargs(dense, vocab_size))[0]
    n_acdc = count_parameters(**_model_kwargs(acdc, vocab_size))[0]
    acdc_big = dataclasses.replace(acdc, hidden=hidden_for_params(n_dense, **_model_kwargs(acdc, vocab_size)))
    dense_small = dataclasses.replace(dense, hidden=hidden_for_params(n_acdc, **_model_kwargs(dense, vocab_size)))
    runs = [("equal hidden", dense), ("equal hidden", acdc), (f"params of dense-h{cfg.hidden}", acdc_big),
            (f"params of acdc-h{cfg.hidden}", dense_small)]
    return [(f"{c.model}-h{c.hidden}", why, c) for why, c in runs]


def compare_charlm(cfg: CharLMConfig, out: Path, ctx: DistContext, resume: bool, progress: bool,
                   overwrite: bool = False) -> list[dict]:
    """Train every configuration of :func:`compare_configs` into ``out/<label>``; one results row each."""
    corpus = load_corpus(cfg.data, cfg.val_fraction, cfg.max_chars)
    rows = []
    for label, why, run_cfg in compare_configs(cfg, len(corpus.vocab)):
        result = train_charlm(run_cfg, out / label, ctx, resume, progress, label, overwrite)
        rows.append({**result, "comparison": why})
    return rows


# ----------------------------------------------------------------------------------------- reporting
def plot_curves(results: list[dict], path: Path, title: str | None = None) -> Path:
    """Training BPC (moving average) and validation BPC against step, one line per run."""
    fig, (ax_train, ax_val) = new_figure(ncols=2, figsize=(11, 4.4))
    set_title(fig, title)
    for i, r in enumerate(results):
        h = r["history"]
        window = max(1, len(h["train_bpc"]) // 50)
        smooth = torch.tensor(h["train_bpc"]).unfold(0, window, 1).mean(1) if h["train_bpc"] else torch.zeros(0)
        ax_train.plot(h["step"][window - 1:], smooth.tolist(), label=r["label"], **line_style(i, len(smooth)))
        ax_val.plot(h["val_step"], h["val_bpc"], label=r["label"], **line_style(i, len(h["val_step"])))
    ax_train.set(xlabel="step", ylabel="train bits/char (moving avg)", title="training")
    ax_val.set(xlabel="step", ylabel="validation bits/char", title="validation")
    for ax in (ax_train, ax_val):
        integer_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def summary_rows(results: list[dict]) -> list[dict]:
    return [{"run": r["label"], "comparison": r.get("comparison", ""), "model": r["config"]["model"],
             "hidden": r["config"]["hidden"], "params": r["parameters"], "LSTM params": r["recurrent_parameters"],
             "steps": r["config"]["steps"], "val BPC": r["final_val_bpc"], "best val BPC": r["best_val_bpc"],
             "chars/s": round(r["chars_per_second"]) if r["chars_per_second"] else ""} for r in results]
