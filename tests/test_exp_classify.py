import numpy as np
import pytest
import torch
from torch import nn

from experiment_checks import assert_png, read_results, run_command, single_threaded  # noqa: F401 (autouse)
from torch_acdc import StackedACDC
from torch_acdc.experiments.classify import build_acdc_head, build_acdc_only, build_dense_mlp, train_classifier
from torch_acdc.experiments.digits_data import MNIST_FILES, load_mnist, load_sklearn_digits, read_idx, write_idx


def test_fast_mode_on_sklearn_digits(tmp_path, capsys):
    assert run_command("classify", "--fast", "--out", tmp_path, "--no-progress") == 0
    res = read_results(tmp_path)
    assert_png(tmp_path / "accuracy.png")
    assert res["dataset"] == "sklearn-digits" and res["test_size"] == 450
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"dense", "acdc-only", "acdc-head"}
    for r in rows.values():
        assert r["params"] > 0 and r["flops"] == 2 * r["mult_adds"] > 0
    # chance is 0.1; measured after 5 epochs: dense ~0.93, acdc-only ~0.9 (depth 4), acdc-head ~0.93
    assert rows["dense"]["test_accuracy"] > 0.8
    assert rows["acdc-only"]["test_accuracy"] > 0.6
    assert rows["acdc-head"]["test_accuracy"] > 0.6
    assert rows["acdc-only"]["params"] == 3 * 4 * 64  # depth 4, width 64: a, d, bias per layer
    assert len(res["histories"]["dense"][0]) == 5
    out = capsys.readouterr().out
    assert "| acdc-only |" in out and "FLOPs" in out


def test_acdc_only_network_has_no_dense_layer():
    model = build_acdc_only(64, 10, depth=3, width=96)
    assert not any(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Bilinear)) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 3 * 3 * 96
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert any(isinstance(m, nn.Linear) for m in build_acdc_head(64, 10, 3).modules())
    assert isinstance(build_dense_mlp(64, 10, 32)[0], nn.Linear)
    assert isinstance(model[0], StackedACDC) and model[0].features == 96


def _write_tiny_mnist(folder, gz: bool) -> None:
    """Learnable fake digits: label k lights up row 2k of a 28x28 image, plus noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 200), ("test", 50)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        images[np.arange(count), 2 * labels, :] = 255
        suffix = ".gz" if gz else ""
        write_idx(folder / (MNIST_FILES[f"{split}_images"] + suffix), images)
        write_idx(folder / (MNIST_FILES[f"{split}_labels"] + suffix), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loading(tmp_path, gz):
    _write_tiny_mnist(tmp_path, gz)
    data = load_mnist(tmp_path, limit_test=20)
    assert (len(data.train), len(data.test), data.in_features) == (200, 20, 784)
    x, y = data.train[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() == 1.0 and y.dtype == torch.int64
    assert x.view(28, 28)[2 * y].min() == 1.0


def test_mnist_from_data_dir_via_the_command(tmp_path):
    _write_tiny_mnist(tmp_path, gz=True)
    out = tmp_path / "run"
    assert run_command("classify", "--data-dir", tmp_path, "--models", "acdc-only", "--epochs", 4,
                       "--depth", 2, "--seeds", 1, "--out", out, "--no-progress") == 0
    res = read_results(out)
    (row,) = res["rows"]
    assert res["dataset"] == "mnist" and row["params"] == 3 * 2 * 784
    assert row["test_accuracy"] > 0.5  # the fake digits are easy; chance is 0.1


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 2), dtype=np.int32))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-4])
    with pytest.raises(ValueError, match="file has"):
        read_idx(tmp_path / "cut")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_train_classifier_contract():
    data = load_sklearn_digits()
    torch.manual_seed(0)
    model = build_dense_mlp(64, 10, 16)
    res = train_classifier(model, data.train, data.test, epochs=2, batch_size=64, lr=1e-2, seed=0)
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert set(res.history[0]) == {"epoch", "train_loss", "test_loss", "test_accuracy"}
    assert res.test_accuracy == res.history[-1]["test_accuracy"] > 0.5


def test_sweep_compares_at_equal_compute(tmp_path, capsys):
    """classify --sweep: step counts from measured step costs, the LR chosen on validation accuracy (a held-out
    part of the training set), test accuracy reported with its range over >= 2 seeds; re-running trains nothing."""
    args = ["classify", "--sweep", "--fast", "--no-progress", "--models", "dense", "acdc-only", "--lrs", "0.003",
            "0.01", "--budgets", "0.05", "0.1", "0.2", "--out", tmp_path]
    assert run_command(*args) == 0
    res = read_results(tmp_path)
    assert res["seeds"] == [0, 1] and res["jobs"] == 8 and res["protocol"]["settings"]["val"] == round(0.2 * 1347)
    assert res["protocol"]["settings"]["train"] + res["protocol"]["settings"]["val"] == 1347
    assert len(res["rows"]) == 6 and res["baselines"][0]["variant"] == "majority class"
    for r in res["rows"]:
        assert r["chosen lr"] in (0.003, 0.01) and r["val accuracy"] == max(r["by lr"].values())
        assert r["steps"] == max(1, round(r["budget s"] * 1e3 / res["plan"]["step_ms"][r["family"]]))
        assert r["range"]["test accuracy"][0] <= r["test accuracy"] + 1e-9 <= r["range"]["test accuracy"][1] + 2e-9
    dense = [r for r in res["rows"] if r["family"] == "dense"]
    # it learned (well above the majority class); how far depends on the steps the measured costs allow
    assert dense[-1]["test accuracy"] > res["baselines"][0]["test accuracy"] + 0.2
    assert_png(tmp_path / "equal_compute.png")
    capsys.readouterr()
    assert run_command(*args) == 0 and read_results(tmp_path)["rows"] == res["rows"]


@pytest.mark.parametrize("extra,message", [(["--lrs", "0.01", "0.01"], "distinct positive"),
                                           (["--budgets", "1", "1"], "distinct positive"),
                                           (["--resume"], "drop --resume")])
def test_sweep_bad_input_fails_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert run_command("classify", "--sweep", "--fast", "--no-progress", *extra, "--out", out) in (1, 2)
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_sweep_lists_one_command_per_job(capsys):
    assert run_command("classify", "--sweep", "--fast", "--lrs", "0.01", "--models", "dense", "acdc-head",
                       "--list-jobs") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 2 * 2  # plan, 2 models x 1 LR x 2 seeds, merge
    outs = {line.split("--out ")[1].split()[0] for line in lines}
    assert len(outs) == 1 and outs.pop().startswith("runs/classify-sweep-")  # one folder, no space in it
    assert lines[1].endswith("# dense-lr0.01-s0") and lines[-1].endswith("--merge")
    assert lines[1].startswith("acdc classify --sweep --fast --lrs 0.01 --models dense acdc-head --out runs/")
