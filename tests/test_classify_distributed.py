"""`acdc classify` under torchrun (2 gloo processes on loopback == 1 process) and killed/resumed (bitwise)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from experiment_checks import read_results, run_command, single_threaded  # noqa: F401 (autouse)
from torch_acdc.training import CheckpointError, CheckpointManager, load_checkpoint
from torchrun_helpers import needs_gloo, torchrun

MODELS = ("dense", "acdc-only", "acdc-head")
STEPS = 42  # one epoch of the 1347 sklearn-digits training images in global batches of 32
SMALL = ["classify", "--epochs", "1", "--seeds", "1", "--depth", "2", "--batch-size", "32", "--no-progress"]


def _checkpoint(out, model, step):
    return load_checkpoint(out / "checkpoints" / f"{model}-seed0" / f"ckpt-{step:08d}.pt")


def _assert_same_training_state(a: dict, b: dict) -> None:
    """Two checkpoints' model and Adam state are bitwise equal (and their hyper-parameters equal)."""
    exact = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(a["components"]["model"], b["components"]["model"], **exact)
    torch.testing.assert_close(a["components"]["optimizer"]["state"], b["components"]["optimizer"]["state"], **exact)
    assert a["components"]["optimizer"]["param_groups"] == b["components"]["optimizer"]["param_groups"]


def _newest_step(ckpt_dir) -> int:
    found = CheckpointManager(ckpt_dir).checkpoints()
    return found[-1][0] if found else -1


@needs_gloo
def test_two_gloo_processes_match_one_process(tmp_path):
    """Same global batches, DDP-averaged gradients: the dense MLP follows the one-process trajectory for a
    whole run; the ACDC models' first step (parameters and Adam's first moment, i.e. the gradient) agrees.

    Later ACDC steps are not comparable: e.g. the last layer's DC diagonal entry (D[-1, 0]) of acdc-only only
    shifts every logit equally, so its exact gradient is 0 (softmax is shift invariant) and the computed one is
    rounding noise (~1e-10), which Adam normalises into lr-sized steps that differ between any two reduction
    orders (measured: 1e-3 after step 2, 0.07-0.3 after 210 steps, while dense stays at 7e-8).
    """
    one, two = tmp_path / "one", tmp_path / "two"
    steps = 3 * (1347 // 256)  # 3 epochs of 5 global batches of 256; a checkpoint after every step (~0.1 s each)
    args = [*SMALL, "--epochs", "3", "--batch-size", "256", "--checkpoint-every", "1", "--keep", str(steps)]
    proc = torchrun(*args, "--out", str(two))
    assert run_command(*args, "--out", one) == 0
    assert proc.stdout.count("| dense |") == 1 and "2 process(es)" in proc.stdout  # rank 0 alone prints
    r1, r2 = read_results(one), read_results(two)
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    for model in MODELS:
        a, b = _checkpoint(one, model, 1), _checkpoint(two, model, 1)
        assert b["world_size"] == 2 and len(b["rng"]) == 2
        torch.testing.assert_close(b["components"]["model"], a["components"]["model"], rtol=0, atol=1e-6)
        for i, s in a["components"]["optimizer"]["state"].items():
            torch.testing.assert_close(b["components"]["optimizer"]["state"][i]["exp_avg"], s["exp_avg"],
                                       rtol=1e-4, atol=1e-9, msg=f"{model} gradient of parameter {i}")
    a, b = _checkpoint(one, "dense", steps), _checkpoint(two, "dense", steps)
    torch.testing.assert_close(b["components"]["model"], a["components"]["model"], rtol=0, atol=1e-5)
    (h1,), (h2,) = r1["histories"]["dense"], r2["histories"]["dense"]
    assert [h["epoch"] for h in h2] == [1, 2, 3]
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert [h[key] for h in h2] == pytest.approx([h[key] for h in h1], abs=1e-5), key


def test_sigkilled_run_resumes_to_identical_parameters(tmp_path):
    """A real `acdc classify` process is SIGKILLed once its second model has a step-10 checkpoint; `--resume`
    takes the finished first model from its final checkpoint, continues the second and must end (bitwise)
    where an uninterrupted run ends. (Resumed and uninterrupted runs execute in this process, on one thread
    like the victim, to save two interpreter start-ups.)"""
    epochs = 4
    args = ["classify", "--models", "dense", "acdc-head", "--epochs", str(epochs), "--seeds", "1", "--depth", "4",
            "--checkpoint-every", "5", "--threads", "1", "--no-progress", "--out"]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    watched = run_dir / "checkpoints" / "acdc-head-seed0"
    victim = subprocess.Popen([sys.executable, "-m", "torch_acdc.cli", *args, str(run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while _newest_step(watched) < 10 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        _, victim_err = victim.communicate()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == -signal.SIGKILL, f"run ended before it was killed: {victim_err[-2000:]}"
    killed_at = _newest_step(watched)
    assert 10 <= killed_at < epochs * STEPS and not (run_dir / "results.json").exists()
    assert run_command(*args, run_dir, "--resume") == 0
    assert run_command(*args, ref_dir) == 0
    for model in ("dense", "acdc-head"):
        a, b = _checkpoint(ref_dir, model, epochs * STEPS), _checkpoint(run_dir, model, epochs * STEPS)
        _assert_same_training_state(a, b)
        assert b["extra"] == a["extra"]  # per-epoch history, running loss, fingerprint
    ref, res = read_results(ref_dir), read_results(run_dir)
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "step_ms"} for r in rows]  # wall time varies
    assert res["histories"] == ref["histories"] and untimed(res["rows"]) == untimed(ref["rows"])
    assert res["resumed_from_step"] == {"dense-seed0": epochs * STEPS, "acdc-head-seed0": killed_at}
    assert ref["resumed_from_step"] == {"dense-seed0": None, "acdc-head-seed0": None}


def test_resume_refuses_a_different_configuration(tmp_path, capsys):
    assert run_command(*SMALL, "--models", "dense", "--out", tmp_path) == 0
    assert run_command(*SMALL, "--models", "dense", "--lr", "2e-3", "--resume", "--out", tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("acdc classify: error: checkpoint ") and err.count("\n") == 1
    assert "different run configuration (lr: checkpoint 0.001, now 0.002)" in err
    with pytest.raises(CheckpointError, match=r"different run configuration \(lr: checkpoint 0.001, now 0.002"):
        run_command("--debug", *SMALL, "--models", "dense", "--lr", "2e-3", "--resume", "--out", tmp_path)
    # a finished run extended by one epoch equals a straight two-epoch run
    assert run_command(*SMALL, "--models", "dense", "--epochs", "2", "--resume", "--out", tmp_path) == 0
    straight = tmp_path / "straight"
    assert run_command(*SMALL, "--models", "dense", "--epochs", "2", "--out", straight) == 0
    _assert_same_training_state(_checkpoint(tmp_path, "dense", 2 * STEPS), _checkpoint(straight, "dense", 2 * STEPS))
    assert read_results(tmp_path)["histories"] == read_results(straight)["histories"]
