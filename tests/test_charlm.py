"""acdc charlm: corpus, model, BPC, sampling, the command's outputs, and resuming (incl. a real SIGKILL)."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from torch_acdc.cli import main
from torch_acdc.experiments.charlm import (BUILTIN_CORPUS, CharLM, count_parameters, evaluate_bpc,
                                           hidden_for_params, load_corpus, read_text, sample_text)
from torch_acdc.training import CheckpointError, DistContext, StreamBatches, load_checkpoint

TINY = ["--fast", "--hidden", "16", "--embed", "8", "--batch", "4", "--bptt", "16", "--no-progress",
        "--sample", "0"]


def _make_text(n_lines=400, seed=0) -> str:
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while small birds sing near old stone walls".split()
    return "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + "."
                     for _ in range(n_lines))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(_make_text(), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: tiny models run fastest so (2 threads spin against each other on a busy 2-core box), and
    in-process runs are bitwise comparable with each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _final(out, steps):
    return load_checkpoint(out / "checkpoints" / f"ckpt-{steps:08d}.pt")


def _results(out):
    return json.loads((out / "results.json").read_text())


# -------------------------------------------------------------------------------------------- corpus
def test_corpus_split_vocab_and_encoding(text_file):
    corpus = load_corpus(str(text_file), val_fraction=0.2, max_chars=5000)
    text = text_file.read_text()[:5000]
    assert corpus.vocab == "".join(sorted(set(text)))
    assert len(corpus.train) == 4000 and len(corpus.val) == 1000
    assert "".join(corpus.vocab[i] for i in torch.cat([corpus.train, corpus.val])) == text
    assert torch.equal(corpus.encode("the"), corpus.train[:0].new_tensor([corpus.vocab.index(c) for c in "the"]))
    with pytest.raises(ValueError, match="not in the corpus vocabulary"):
        corpus.encode("~")


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        read_text(str(tmp_path / "missing.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text(str(tmp_path / "bin.txt"))
    with pytest.raises(ValueError, match="val_fraction"):
        load_corpus(BUILTIN_CORPUS, val_fraction=1.0)


def test_builtin_corpus_needs_no_download():
    text = read_text(None)
    assert len(text) > 100_000 and "assert" in text


# --------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("kind", ["dense", "acdc"])
def test_charlm_shapes_and_state_carry(kind):
    if kind == "acdc":
        pytest.importorskip("torch_acdc.recurrent")
    torch.manual_seed(0)
    model = CharLM(11, 12, embed_dim=5, num_layers=2, kind=kind, dtype=torch.float64)
    tokens = torch.randint(0, 11, (3, 10))
    logits, (h, c) = model(tokens)
    assert logits.shape == (3, 10, 11) and h.shape == c.shape == (2, 3, 12)
    first, state = model(tokens[:, :4])  # truncated BPTT: chunks with carried state == the whole sequence
    second, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), logits, rtol=1e-12, atol=1e-12)
    total, recurrent = count_parameters(vocab_size=11, hidden_size=12, embed_dim=5, num_layers=2, kind=kind)
    assert total == sum(p.numel() for p in model.parameters())
    assert recurrent == sum(p.numel() for p in model.rnn.parameters())


def test_charlm_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind 'gru'"):
        CharLM(10, 8, kind="gru")


def test_hidden_for_params_is_closest():
    kw = {"vocab_size": 40, "embed_dim": 8, "kind": "dense"}

    def total(h):
        return count_parameters(hidden_size=h, **kw)[0]

    for budget in (500, 12_345, total(37)):
        h = hidden_for_params(budget, **kw)
        assert abs(total(h) - budget) <= min(abs(total(h - 1) - budget), abs(total(h + 1) - budget))
    assert hidden_for_params(total(37), **kw) == 37


# ------------------------------------------------------------------------------------- BPC, sampling
def test_uniform_model_scores_log2_vocab_bits():
    tokens = torch.randint(0, 20, (500,), generator=torch.Generator().manual_seed(0))
    model = CharLM(20, 8, embed_dim=4)
    torch.nn.init.zeros_(model.decoder.weight)
    torch.nn.init.zeros_(model.decoder.bias)
    bpc = evaluate_bpc(model, StreamBatches(tokens, 4, 10, shuffle=False), DistContext())
    assert bpc == pytest.approx(math.log2(20), rel=1e-6)


def test_evaluate_bpc_matches_whole_stream_reference():
    """Chunked evaluation with carried state == cross-entropy of each stream run in one piece (float64)."""
    torch.manual_seed(0)
    tokens = torch.randint(0, 15, (700,), generator=torch.Generator().manual_seed(1))
    model = CharLM(15, 10, embed_dim=6, dtype=torch.float64)
    batches = StreamBatches(tokens, streams=3, bptt=7, shuffle=False)
    n = batches.chunks_per_epoch * batches.bptt
    windows = tokens[batches.offsets(0)[:, None] + torch.arange(n + 1)]
    with torch.no_grad():
        logits, _ = model(windows[:, :-1])
        ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()) / math.log(2)
    assert evaluate_bpc(model, batches, DistContext()) == pytest.approx(ref.item(), rel=1e-12)


def test_sample_text_is_seeded(text_file):
    corpus = load_corpus(str(text_file), 0.1)
    model = CharLM(len(corpus.vocab), 8, embed_dim=4)
    a = sample_text(model, corpus, 50, prime="The ", seed=3)
    assert len(a) == 50 and set(a) <= set(corpus.vocab)
    assert sample_text(model, corpus, 50, prime="The ", seed=3) == a
    assert sample_text(model, corpus, 50, prime="The ", seed=4) != a
    with pytest.raises(ValueError, match="temperature"):
        sample_text(model, corpus, 5, temperature=0)


# -------------------------------------------------------------------------------------------- command
def test_command_trains_and_writes_results(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["charlm", "--data", str(text_file), *TINY, "--steps", "60", "--val-every", "20",
                 "--lr", "0.02", "--sample", "40", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    r = _results(out)
    assert "| dense-h16 |" in printed and "--- sample from dense-h16" in printed and r["sample"] in printed
    assert len(r["sample"]) == 40
    assert r["history"]["step"] == list(range(1, 61)) and r["history"]["val_step"] == [20, 40, 60]
    assert r["final_val_bpc"] < math.log2(r["vocab_size"]) - 2  # learned far beyond uniform guessing
    assert r["history"]["val_bpc"][-1] < r["history"]["val_bpc"][0]
    assert (out / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name != ".acdc.lock") == ["ckpt-00000040.pt", "ckpt-00000060.pt"]
    assert r["parameters"] == count_parameters(vocab_size=r["vocab_size"], hidden_size=16, embed_dim=8)[0]


def test_resume_extends_a_finished_run_bitwise(text_file, tmp_path):
    common = ["charlm", "--data", str(text_file), *TINY, "--val-every", "10", "--checkpoint-every", "10"]
    main([*common, "--steps", "30", "--out", str(tmp_path / "straight")])
    main([*common, "--steps", "15", "--out", str(tmp_path / "parts")])
    main([*common, "--steps", "30", "--out", str(tmp_path / "parts"), "--resume"])
    a, b = _final(tmp_path / "straight", 30), _final(tmp_path / "parts", 30)
    _assert_same(a["components"], b["components"])
    _assert_same(a["data"], b["data"])
    assert _results(tmp_path / "parts")["resumed_from_step"] == 15
    assert a["extra"]["history"]["train_bpc"] == b["extra"]["history"]["train_bpc"]


def test_corrupt_checkpoint_falls_back_to_previous_good(text_file, tmp_path):
    args = ["charlm", "--data", str(text_file), *TINY, "--steps", "20", "--checkpoint-every", "5",
            "--out", str(tmp_path)]
    main(args)
    reference = _final(tmp_path, 20)
    newest = tmp_path / "checkpoints" / "ckpt-00000020.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a disk that lied about fsync
    with pytest.warns(UserWarning, match="ckpt-00000020.pt is unusable: truncated.*falling back"):
        main([*args, "--resume"])
    assert _results(tmp_path)["resumed_from_step"] == 15
    assert (tmp_path / "checkpoints" / "ckpt-00000020.pt.corrupt").exists()  # kept for inspection
    _assert_same(reference["components"], _final(tmp_path, 20)["components"])


def test_resume_refuses_a_different_configuration(text_file, tmp_path, capsys, monkeypatch):
    args = ["charlm", "--data", str(text_file), *TINY, "--steps", "5", "--out", str(tmp_path)]
    main(args)
    capsys.readouterr()
    assert main([*args, "--resume", "--lr", "0.01"]) == 1  # one error line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("acdc charlm: error: ") and err.count("\n") == 1
    assert "different run configuration (lr: checkpoint 0.002, now 0.01" in err
    monkeypatch.setenv("ACDC_DEBUG", "1")  # the library exceptions themselves, for the traceback
    with pytest.raises(CheckpointError, match=r"different run configuration \(lr: checkpoint 0.002, now 0.01"):
        main([*args, "--resume", "--lr", "0.01"])
    with pytest.raises(ValueError, match="--steps 3 is before the checkpoint's step 5"):
        main([*args, "--resume", "--steps", "3"])


def test_params_flag_sizes_the_model(text_file, tmp_path):
    main(["charlm", "--data", str(text_file), *TINY, "--steps", "2", "--params", "3000", "--out", str(tmp_path)])
    r = _results(tmp_path)
    kw = {"vocab_size": r["vocab_size"], "embed_dim": 8}
    assert r["config"]["hidden"] == hidden_for_params(3000, **kw)
    assert abs(r["parameters"] - 3000) < 3000 * 0.1


def test_compare_runs_equal_hidden_and_equal_params(text_file, tmp_path, capsys):
    pytest.importorskip("torch_acdc.recurrent")
    main(["charlm", "--data", str(text_file), *TINY, "--bptt", "8", "--steps", "3", "--val-every", "3",
          "--compare", "--out", str(tmp_path)])
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["config"]["model"] for r in runs] == ["dense", "acdc", "acdc", "dense"]
    assert runs[0]["config"]["hidden"] == runs[1]["config"]["hidden"] == 16
    for big, target in ((runs[2], runs[0]), (runs[3], runs[1])):  # each re-sized to the other's budget
        assert abs(big["parameters"] - target["parameters"]) <= 0.05 * target["parameters"]
    assert (tmp_path / "curves.png").exists() and all((tmp_path / r["label"] / "results.json").exists()
                                                      for r in runs)
    assert "equal hidden" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ kill and resume
def _newest_step(ckpt_dir) -> int:
    steps = [int(p.name[5:13]) for p in ckpt_dir.glob("ckpt-*.pt")] if ckpt_dir.is_dir() else []
    return max(steps, default=-1)


def test_sigkilled_run_resumes_to_identical_parameters(text_file, tmp_path):
    """A real `acdc charlm` process is SIGKILLed after its step-10 checkpoint; `--resume` must reach exactly
    (bitwise) the parameters, optimizer state and curves of an uninterrupted run started at the same time."""
    steps = 120
    cmd = [sys.executable, "-m", "torch_acdc.cli", "charlm", "--data", str(text_file), *TINY, "--steps",
           str(steps), "--checkpoint-every", "5", "--val-every", "40", "--threads", "1", "--out"]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = subprocess.Popen([*cmd, str(ref_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([*cmd, str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while _newest_step(run_dir / "checkpoints") < 10 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        _, victim_err = victim.communicate()
        assert victim.returncode == -signal.SIGKILL, f"run ended before it was killed: {victim_err[-2000:]}"
        killed_at = _newest_step(run_dir / "checkpoints")
        assert 10 <= killed_at < steps
        resumed = subprocess.run([*cmd, str(run_dir), "--resume"], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        _, reference_err = reference.communicate(timeout=300)
        assert reference.returncode == 0, reference_err[-2000:]
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    a, b = _final(ref_dir, steps), _final(run_dir, steps)
    _assert_same(a["components"], b["components"])  # model and Adam state, bit for bit
    _assert_same(a["data"], b["data"])              # stream offsets and carried (h, c)
    for h in (a["extra"]["history"], b["extra"]["history"]):
        h.pop("val_seconds", None)  # wall-clock seconds: not reproducible bit for bit
    _assert_same(a["extra"]["history"], b["extra"]["history"])
    assert _results(run_dir)["resumed_from_step"] == killed_at
