"""`acdc charlm` under torchrun: 2 gloo processes on loopback == 1 process on the same global batch; resumable."""
import json

import pytest
import torch

from torch_acdc.cli import main
from torch_acdc.training import load_checkpoint
from torchrun_helpers import needs_gloo, torchrun

pytestmark = needs_gloo

STEPS = 6
ARGS = ["charlm", "--fast", "--hidden", "16", "--embed", "8", "--batch", "4", "--bptt", "16", "--steps",
        str(STEPS), "--checkpoint-every", "3", "--val-every", "3", "--no-progress", "--sample", "0"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    words = "ACDC layers replace dense matrices with diagonal scalings and cosine transforms".split()
    path.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(i % 9 + 3))
                              for i in range(500)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_process_run(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(*ARGS, "--data", str(text_file), "--out", str(out))
    return out, proc


def _model(out, step):
    return load_checkpoint(out / "checkpoints" / f"ckpt-{step:08d}.pt")


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(text_file, two_process_run, tmp_path):
    out2, proc = two_process_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([*ARGS, "--data", str(text_file), "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    one, two = _model(tmp_path, STEPS), _model(out2, STEPS)
    assert one["world_size"] == 1 and two["world_size"] == 2 and len(two["rng"]) == 2
    for name, p in one["components"]["model"].items():  # fp32 Adam, 6 steps: reduction order differs only
        torch.testing.assert_close(two["components"]["model"][name], p, rtol=0, atol=1e-5, msg=name)
    for h1, h2 in zip(one["data"]["hidden"], two["data"]["hidden"]):  # all 4 streams gathered from 2 ranks
        assert h2.shape == h1.shape == (1, 4, 16)
        torch.testing.assert_close(h2, h1, rtol=0, atol=1e-5)
    r1 = json.loads((tmp_path / "results.json").read_text())
    r2 = json.loads((out2 / "results.json").read_text())
    assert r2["world_size"] == 2 and "2 process(es)" in proc.stdout
    assert r2["history"]["val_bpc"] == pytest.approx(r1["history"]["val_bpc"], abs=1e-5)
    assert r2["history"]["train_bpc"] == pytest.approx(r1["history"]["train_bpc"], abs=1e-5)


def test_two_process_run_resumes_bitwise(text_file, two_process_run, tmp_path):
    """Copy the 2-process run's step-3 checkpoint, resume it with 2 processes: same step-6 bits."""
    out2, _ = two_process_run
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-00000003.pt").write_bytes((out2 / "checkpoints" / "ckpt-00000003.pt")
                                                                .read_bytes())
    torchrun(*ARGS, "--data", str(text_file), "--out", str(tmp_path), "--resume")
    resumed, straight = _model(tmp_path, STEPS), _model(out2, STEPS)
    exact = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(resumed["components"]["model"], straight["components"]["model"], **exact)
    torch.testing.assert_close(resumed["components"]["optimizer"]["state"],
                               straight["components"]["optimizer"]["state"], **exact)
    torch.testing.assert_close(resumed["data"], straight["data"], **exact)  # offsets and gathered (h, c)
    assert json.loads((tmp_path / "results.json").read_text())["resumed_from_step"] == 3
