"""acdc autodiff: equal derivatives across methods, symbolic == autograd, structure of results (no timings)."""
import math

import pytest
import sympy
import torch
from torch.func import grad, jacrev

from torch_acdc import StackedACDC
from torch_acdc.experiments.autodiff import FAST, resolve_settings
from torch_acdc.experiments.autodiff.forward import central_differences, flat_loss, forward_gradient
from torch_acdc.experiments.autodiff.matrix import jacobian_by_loop, measure_matrix
from torch_acdc.experiments.autodiff.models import PlainACDCStack
from torch_acdc.experiments.autodiff.scaling import METHODS, fit_loglog, measure_scaling
from torch_acdc.experiments.autodiff.symbolic import (_run_limited, char_indices, measure_symbolic, param_count,
                                                      symbolic_gradient_job, sympy_loss, torch_loss, tree_size)
from torch_acdc.experiments.autodiff.timing import interleaved_medians

from experiment_checks import assert_png, read_results, run_command, single_threaded  # noqa: F401


@pytest.mark.parametrize("n", [1, 5, 8, 33])
@pytest.mark.parametrize("activation", [None, "tanh"])
def test_plain_stack_equals_stacked_acdc_with_gradients(n, activation):
    torch.manual_seed(n)
    stack = StackedACDC(n, n, 3, activation=activation, init="uniform").double()
    plain = PlainACDCStack(stack)
    x = torch.randn(4, n, dtype=torch.float64)
    assert (plain(x) - stack(x)).abs().max() < 1e-12
    params = list(stack.parameters())
    g1 = torch.autograd.grad(stack(x).sin().sum(), params)
    g2 = torch.autograd.grad(plain(x).sin().sum(), params)
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() < 1e-10


def test_forward_mode_and_differences_match_reverse():
    torch.manual_seed(0)
    model = StackedACDC(6, 6, 2, activation="tanh", init="uniform").double()
    f, theta = flat_loss(model, torch.randn(3, 6, dtype=torch.float64))
    assert theta.numel() == 3 * 2 * 6
    rev = grad(f)(theta)
    assert (forward_gradient(f, theta, chunk=7) - rev).abs().max() < 1e-10
    err = lambda h: (central_differences(f, theta, h, chunk=None) - rev).abs().max().item()  # noqa: E731
    assert err(1e-5) < 1e-8 < err(1e-1)  # accurate at a good step, truncation error at a large one


def test_scaling_rows_and_equal_gradients():
    rows = measure_scaling([8, 16], [1, 2], batch=2, dense_limit=300, rounds=1, min_sample=0.0, progress=False)
    assert {(r["n"], r["depth"]) for r in rows} == {(8, 1), (8, 2), (16, 1), (16, 2)}
    dense = {(r["n"], r["depth"]) for r in rows if r["method"] == METHODS[2]}
    assert dense == {(8, 1), (8, 2), (16, 1)}  # 2 * 16^2 > dense_limit: skipped
    for r in rows:
        assert r["grad_s"] > 0 and r["eval_s"] > 0
        if r["method"] == METHODS[1]:
            assert r["grad_rel_diff"] < 1e-4  # float32: plain autograd == analytic backward
        assert r["r_n_log2n"] == pytest.approx(r["depth"] * r["n"] * math.log2(r["n"]))


def test_fit_loglog_recovers_power():
    xs = [2.0**k for k in range(1, 8)]
    assert fit_loglog(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5)
    assert math.isnan(fit_loglog([4, 4], [1, 2]))


def test_interleaved_medians_times_every_callable():
    calls = {"a": 0, "b": 0}

    def bump(k):
        calls[k] += 1

    out = interleaved_medians({"a": lambda: bump("a"), "b": lambda: bump("b")}, rounds=3, min_sample=0.0)
    assert set(out) == {"a", "b"} and calls["a"] >= 5 and calls["b"] >= 5
    with pytest.raises(ValueError, match="rounds"):
        interleaved_medians({"a": lambda: None}, rounds=0)


def test_lstm_parameter_counts_and_characters():
    assert param_count(2) == 44 and param_count(9) == 702
    assert char_indices("hello world!", 9) == [0, 1, 2, 2, 3, 4, 5, 3, 6, 2, 7, 8]
    assert max(char_indices("hello world!", 4)) == 3


def test_symbolic_gradient_equals_autograd_and_swells():
    nodes, loss_nodes = [], []
    for cells in (1, 2):
        tokens = char_indices("hello world!", cells)[:2]
        theta = torch.randn(param_count(cells), dtype=torch.float64, generator=torch.Generator().manual_seed(cells))
        msgs = []
        symbolic_gradient_job(cells, tokens, theta.tolist(), msgs.append)
        stages = dict(msgs)
        leaf = theta.clone().requires_grad_()
        ref = torch.autograd.grad(torch_loss(leaf, tokens, cells), leaf)[0]
        sym = torch.tensor(stages["evaluated"]["gradient"], dtype=torch.float64)
        assert (sym - ref).abs().max() <= 1e-12 * max(1.0, ref.abs().max().item())
        nodes.append(stages["nodes counted"]["gradient_tree_nodes"])
    assert nodes[0] < nodes[1]
    for cells in (1, 2, 3):
        symbols = sympy.symbols(f"p0:{param_count(cells)}")
        loss_nodes.append(tree_size([sympy_loss(symbols, char_indices("hello world!", cells)[:3], cells)])[0])
    assert loss_nodes[0] < loss_nodes[1] < loss_nodes[2]


def test_symbolic_time_limit_stops_and_skips_larger_sizes():
    done, status = _run_limited(3, char_indices("hello world!", 3), [0.1] * param_count(3), limit=0.05)
    assert status == "time limit" and "evaluated" not in done
    rows = measure_symbolic([3, 4], [12], limit=0.05, rounds=1, progress=False)
    assert rows[0]["status"] == "time limit"
    assert rows[1]["status"].startswith("not attempted") and rows[1]["params"] == param_count(4)


def test_matrix_methods_agree():
    stack = StackedACDC(6, 6, 2, init="uniform").double()
    x = torch.randn(6, dtype=torch.float64)
    assert (jacobian_by_loop(stack, x) - jacrev(stack)(x)).abs().max() < 1e-12
    rows = measure_matrix([8], depth=2, rounds=1, min_sample=0.0, progress=False)
    assert {r["group"] for r in rows} == {"jacobian", "hessian", "hvp", "gradient"}
    assert all(r["rel_err"] < 1e-10 for r in rows)


def test_settings_explicit_values_win_over_fast():
    s = resolve_settings({"cells": [1], "batch": None}, fast=True)
    assert s["cells"] == [1] and s["batch"] == FAST["batch"]
    with pytest.raises(ValueError, match="unknown"):
        resolve_settings({"colour": 1}, fast=False)


def test_cli_fast_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert run_command("autodiff", "--fast", "--no-progress", "--out", out, "--cells", "1", "--scaling-ns", "16",
                       "--scaling-depths", "1", "--forward-ns", "8", "--matrix-ns", "8", "--rounds", "1",
                       "--min-sample", "0.0001") == 0
    res = read_results(out)
    cfg = res["config"]
    assert cfg["fast"] and cfg["cells"] == [1] and cfg["scaling_depths"] == [1] and cfg["batch"] == FAST["batch"]
    assert {"scaling", "forward", "symbolic", "matrix"} <= set(res)
    assert res["symbolic"]["rows"][0]["status"] == "finished"
    for name in ("scaling_nlogn", "scaling_n2", "grad_over_eval", "forward", "fd_error", "symbolic", "matrix"):
        assert_png(out / f"{name}.png")
    assert "[--fast run]" in (out / "summary.md").read_text()


def test_cli_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit):
        run_command("autodiff", "--rounds", "0")
    assert "positive integer" in capsys.readouterr().err


def test_cli_refuses_an_earlier_run_and_honours_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    args = ("autodiff", "--fast", "--no-progress", "--out", out, "--parts", "forward", "--forward-ns", "8",
            "--rounds", "1", "--min-sample", "0.0001")
    assert run_command(*args) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" not in err
    assert run_command(*args, "--overwrite") == 0
    assert "forward" in read_results(out)
