import numpy as np
import pytest
import torch

from experiment_checks import assert_png, read_results, run_command, single_threaded  # noqa: F401 (autouse)
from torch_acdc.experiments.approx import load_matrix


def test_fast_matrix_protocol(tmp_path, capsys):
    assert run_command("approx", "--fast", "--out", tmp_path, "--no-progress") == 0
    res = read_results(tmp_path)
    assert res["protocol"] == "matrix" and "relative Frobenius" in res["metric"]
    assert_png(tmp_path / "error_vs_params.png")
    assert_png(tmp_path / "curves.png")
    rows = {(r["permutation"], r["depth"]): r for r in res["rows"]}
    assert set(rows) == {(p, d) for p in ("random", "riffle", "none") for d in (1, 4)}
    for (perm, depth), r in rows.items():
        assert r["params"] == 2 * 16 * depth  # bias-free stacks of width n = 16
        assert len(r["errors"]) == 2 and 0.3 < r["error_mean"] < 1.0  # a Gaussian W is far from 1 layer
        assert r["mean_curve"][0][1] > r["error_mean"]  # the fit improved on the initialisation
    # Depth helps with random permutations: measured 0.88 -> 0.60 (n = 16, 40 L-BFGS steps).
    assert rows[("random", 4)]["error_mean"] < 0.8 * rows[("random", 1)]["error_mean"]
    assert "| random | 4 |" in capsys.readouterr().out


def test_log_protocol_compares_with_the_research_log(tmp_path):
    assert run_command("approx", "--protocol", "log", "--n", 32, "--depths", 1, 2, "--permutations", "random",
                       "--seeds", 1, "--steps", 40, "--out", tmp_path, "--no-progress") == 0
    res = read_results(tmp_path)
    assert res["protocol"] == "log" and "mean squared error" in res["metric"]
    r1, r2 = res["rows"]
    assert (r1["log_mean"], r2["log_mean"]) == (pytest.approx(0.0399, abs=1e-4), pytest.approx(0.0220, abs=1e-4))
    # Same order of magnitude as the log's numbers; a broken fit stays near the initial MSE (~0.3-0.5).
    assert 0.005 < r2["error_mean"] < r1["error_mean"] < 0.08
    base = res["baselines"]
    assert base["dense_least_squares"] < 1e-3 < base["constant"] < base["zero"]
    assert_png(tmp_path / "error_vs_params.png")


def test_matrix_file_and_afdf_layers(tmp_path):
    w = np.random.default_rng(0).standard_normal((6, 10))
    np.save(tmp_path / "w.npy", w)
    out = tmp_path / "run"
    assert run_command("approx", "--matrix", tmp_path / "w.npy", "--layer", "afdf", "--depths", 2,
                       "--permutations", "random", "--seeds", 1, "--steps", 20, "--out", out, "--no-progress") == 0
    res = read_results(out)
    (row,) = res["rows"]
    assert res["target"].startswith("file") and res["n"] == "6x10"
    assert row["params"] == 4 * 10 * 2  # complex diagonals a, d at width max(6, 10), depth 2
    assert 0.0 < row["error_mean"] < 1.0


def test_load_matrix(tmp_path):
    torch.save(torch.ones(3, 4), tmp_path / "w.pt")
    assert load_matrix(tmp_path / "w.pt").dtype == torch.float64
    np.save(tmp_path / "v.npy", np.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        load_matrix(tmp_path / "v.npy")
    with pytest.raises(ValueError, match=".npy or .pt"):
        load_matrix(tmp_path / "w.txt")
