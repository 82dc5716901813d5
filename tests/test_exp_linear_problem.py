import math

import pytest
import torch

from experiment_checks import assert_png, read_results, run_command, single_threaded  # noqa: F401 (autouse)
from torch_acdc.experiments.linear_problem import THRESHOLD, make_problem, train_stack


def test_fast_mode(tmp_path, capsys):
    assert run_command("linear-problem", "--fast", "--out", tmp_path, "--no-progress") == 0
    res = read_results(tmp_path)
    assert_png(tmp_path / "loss_curves.png")
    assert res["threshold"] == THRESHOLD and res["config"]["steps"] == 150
    assert 0.01 < res["constant_predictor_mse"] < 0.05  # 16 * (1/48) * (1/12) ~ 0.028
    rows = {(r["permutation"], r["depth"]): r for r in res["rows"]}
    assert set(rows) == {(p, d) for p in ("random", "none") for d in (1, 4)}
    for r in rows.values():
        assert len(r["history"]) == 151 and r["final_loss"] == r["history"][-1]
        assert r["final_loss"] < r["history"][0] / 5  # measured ~0.55 -> 0.02-0.03
        assert r["params"] == 3 * 16 * r["depth"]
        hits = [i for i, loss in enumerate(r["history"]) if loss <= THRESHOLD]
        assert r["hit"] == (hits[0] if hits else None)
    assert rows[("random", 4)]["final_loss"] < rows[("random", 1)]["final_loss"]
    assert "first iter <= 0.02" in capsys.readouterr().out


def test_problem_matches_the_research_log_setup():
    x, y = make_problem(32, 500, "linear-init", seed=0)
    assert x.shape == y.shape == (500, 32) and 0 <= x.min() and x.max() <= 1
    w = torch.linalg.lstsq(torch.cat([x, torch.ones(500, 1)], 1), y).solution  # recover W^T and b
    assert w.abs().max() <= 1 / math.sqrt(32) + 1e-4
    xg, yg = make_problem(8, 100, "gaussian", seed=0)
    assert torch.allclose(torch.linalg.lstsq(xg, yg).solution.T @ xg.T, yg.T, atol=1e-4)  # no bias
    with pytest.raises(ValueError, match="unknown target"):
        make_problem(8, 10, "uniform", seed=0)


def test_lr_multipliers_are_applied():
    x, y = make_problem(8, 64, "linear-init", seed=1)
    plain = train_stack(x, y, 2, "random", bias=True, steps=3, lr=1e-3, lr_multipliers={"A": 1, "D": 1}, seed=0)
    paper = train_stack(x, y, 2, "random", bias=True, steps=3, lr=1e-3, lr_multipliers=None, seed=0)
    assert plain["history"][0] == paper["history"][0]  # same init
    assert paper["history"][-1] < plain["history"][-1]  # 24x / 12x larger diagonal steps move faster
