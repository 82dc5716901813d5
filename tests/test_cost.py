import math

import pytest
import torch
from torch import nn

from experiment_checks import single_threaded  # noqa: F401 (autouse fixture)
from torch_acdc import ACDC, StackedACDC
from torch_acdc.afdf import AFDF, StackedAFDF
from torch_acdc.conv import ACDCConv2d
from torch_acdc.cost import (CostModel, LayerCost, calibrate, diagonal_stack_cost, fft_mult_adds, for_inference,
                             freeze, is_freezable, layer_cost, linear_cost, model_cost, plan_inference,
                             register_cost)


def test_fft_model():
    assert fft_mult_adds(1) == 0
    assert fft_mult_adds(8) == 2 * 8 * 3
    assert fft_mult_adds(1024) == 2 * 1024 * 10


def test_linear_cost_counts_rows_of_any_leading_shape():
    c = layer_cost(nn.Linear(6, 4), (2, 3, 6))
    assert c == linear_cost(6, 4, rows=6)
    assert c.mult_adds == 6 * 6 * 4 and c.params == 28 and c.passes == 1
    assert c.memory == 6 * (6 + 4) + 28 and c.flops == 2 * c.mult_adds


@pytest.mark.parametrize("kwargs, shape", [
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 4, 11, 9)),
    ({"kernel_size": (3, 1), "dilation": 2, "padding": "same"}, (1, 4, 8, 8)),
    ({"kernel_size": 2, "groups": 2, "padding": "valid"}, (1, 4, 7, 5)),
])
def test_conv2d_mult_adds_match_the_real_output_size(kwargs, shape):
    conv = nn.Conv2d(4, 6, **kwargs)
    out = conv(torch.zeros(shape))
    kh, kw = conv.kernel_size
    assert layer_cost(conv, shape).mult_adds == out.numel() * (4 // conv.groups) * kh * kw


@pytest.mark.parametrize("module, n, depth, ffts", [
    (ACDC(16), 16, 1, 2), (StackedACDC(16, 16, 3), 16, 3, 2), (StackedACDC(10, 24, 2, bias=False), 24, 2, 2),
    (AFDF(8), 8, 1, 3), (StackedAFDF(8, 8, 4, permutation=None), 8, 4, 3),
])
def test_structured_costs(module, n, depth, ffts):
    c1, c5 = layer_cost(module, (1, module.in_features)), layer_cost(module, (5, module.in_features))
    assert c1.params == sum(p.numel() for p in module.parameters())
    per_row = depth * (ffts * fft_mult_adds(n) + (6 + (module.bias is not None)) * n)
    assert c1.mult_adds == per_row and c5.mult_adds == 5 * per_row
    assert c5.passes == c1.passes > 0  # fixed per call, independent of the batch
    assert c5.memory > c1.memory


def test_stack_is_cheaper_than_dense_in_mult_adds_only_for_large_n():
    for n, cheaper in ((16, False), (1024, True)):
        structured = diagonal_stack_cost(n, depth=4).mult_adds
        assert (structured < linear_cost(n, n).mult_adds) == cheaper


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.ones(8))  # a parameter of a container: reported as unmodelled

    def forward(self, x):
        return self.lin(self.lin(x)) * self.scale


def test_model_cost_follows_the_forward():
    model = nn.Sequential(StackedACDC(8, 8, 2, activation="relu"), nn.ReLU(), _Twice(), nn.Linear(8, 3))
    report = model_cost(model, (1, 8))
    names = [name for name, _, _ in report.layers]
    assert names == ["0", "2", "2.lin", "3"]
    assert report.unmodelled == ["2"]
    assert report.total.params == sum(p.numel() for p in model.parameters())
    lin = dict((n, c) for n, _, c in report.layers)["2.lin"]
    assert lin.mult_adds == 2 * 64 and lin.params == 72  # called twice: twice the work, parameters once
    assert report.total.mult_adds == (layer_cost(model[0], (1, 8)).mult_adds + 2 * 64 + 24)


class _Declared(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(x)

    def cost(self, input_shape):
        return LayerCost(params=1, mult_adds=float(math.prod(input_shape)), passes=1)


class _Registered(nn.Linear):
    pass


def test_cost_protocol_and_registry():
    report = model_cost(nn.Sequential(_Declared(), _Registered(4, 2)), (3, 4))
    costs = {name: c for name, _, c in report.layers}
    assert set(costs) == {"0", "1"}  # the declared module is not looked into
    assert costs["0"] == LayerCost(params=1, mult_adds=12.0, passes=1)
    assert costs["1"].mult_adds == 3 * 4 * 2  # nn.Linear's model, inherited through the MRO

    @register_cost(_Registered)
    def _custom(m, shape):
        return LayerCost(params=7)

    try:
        assert layer_cost(_Registered(4, 2), (1, 4)) == LayerCost(params=7)
    finally:
        from torch_acdc import cost

        del cost._REGISTRY[_Registered]
    with pytest.raises(TypeError, match="no cost model for ReLU"):
        layer_cost(nn.ReLU(), (1, 4))


@pytest.mark.parametrize("module", [
    ACDC(12), StackedACDC(12, 12, 3), StackedACDC(7, 12, 2, permutation="riffle"), StackedACDC(12, 5, 3, bias=False),
    AFDF(10), StackedAFDF(6, 9, 2),
])
def test_freeze_is_the_same_map(module):
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.uniform_(p, -1, 1)
    linear = freeze(module)
    assert isinstance(linear, nn.Linear) and (linear.bias is None) == (module.bias is None)
    x = torch.randn(5, module.in_features)
    torch.testing.assert_close(linear(x), module(x), atol=1e-5, rtol=1e-5)


def test_freeze_rejects_nonlinear_stacks():
    stack = StackedACDC(4, 4, 2, activation="relu")
    assert not is_freezable(stack) and not is_freezable(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="with an activation"):
        freeze(stack)


def test_for_inference_picks_dense_for_small_n_and_structured_for_large_n():
    torch.manual_seed(0)
    model = nn.Sequential(StackedACDC(16, 2048, 4), nn.ReLU(), StackedACDC(2048, 2048, 1), nn.ReLU(),
                          StackedACDC(2048, 16, 2))
    fast = for_inference(model, batch_size=256)
    # 16 -> 2048 or 2048 -> 16: a thin dense matrix beats a stack 2048 wide; 2048 -> 2048: the stack wins
    assert [type(m).__name__ for m in fast] == ["Linear", "ReLU", "StackedACDC", "ReLU", "Linear"]
    assert isinstance(model[0], StackedACDC) and model.training  # the original is untouched
    assert not fast.training
    x = torch.randn(7, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)


def test_batch_size_moves_the_crossover_both_ways():
    stack = StackedACDC(512, 512, 4)
    # Without dispatch overhead, the dense weight read dominates at batch 1 and is amortised at large batches.
    roofline = CostModel(balance=8.0, overhead=0.0)
    assert plan_inference(stack, 1, roofline)[0].choice == "structured"
    assert plan_inference(stack, 4096, roofline)[0].choice == "dense"
    # With a large per-pass overhead, small batches favour the single dense pass.
    small = StackedACDC(256, 256, 1)
    overhead = CostModel(balance=8.0, overhead=1e6)
    assert plan_inference(small, 1, overhead)[0].choice == "dense"
    assert plan_inference(small, 4096, overhead)[0].choice == "structured"
    assert for_inference(small, 1, overhead).__class__ is nn.Linear  # a freezable root is replaced itself
    with pytest.raises(ValueError, match="positive integer"):
        plan_inference(small, 0)


def test_plan_inference_uses_real_rows_with_an_example_shape():
    conv = ACDCConv2d(8, 8, depth=2)
    plain = plan_inference(conv, 2)[0]
    real = plan_inference(conv, 2, example_shape=(8, 5, 5))[0]
    assert (plain.name, plain.rows, real.rows) == ("acdc", 2, 2 * 25)
    fast = for_inference(conv, 2, example_shape=(8, 5, 5))
    assert isinstance(fast.acdc, nn.Linear)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)


def test_calibrate_returns_positive_constants():
    model = calibrate(repeats=3)
    assert model.balance > 0 and model.overhead > 0
    assert math.isfinite(model.balance) and math.isfinite(model.overhead)


def test_cost_command(tmp_path, capsys):
    from experiment_checks import assert_png, read_results, run_command

    assert run_command("cost", "--fast", "--measure", "--repeats", 2, "--out", tmp_path) == 0
    res = read_results(tmp_path)
    assert_png(tmp_path / "crossover.png")
    models = {(r["dataset"], r["model"]): r for r in res["models"]}
    assert len(models) == 6 and not any(r["unmodelled"] for r in models.values())
    assert models[("sklearn-digits", "acdc-only")]["params"] == 3 * 16 * 64  # depth 16, width 64
    assert models[("mnist", "dense")]["params"] == 784 * 64 + 64 + 64 * 10 + 10
    assert models[("mnist", "dense")]["flops"] == 2 * (784 * 64 + 64 * 10)
    assert len(res["crossover"]) == 4 and {r["model_choice"] for r in res["crossover"]} <= {"dense", "structured"}
    assert all(r["structured_ms"] > 0 and r["dense_ms"] > 0 for r in res["crossover"])
    assert res["cost_model"] == {"balance": 10.0, "overhead": 2.5e6}
    assert "agree on" in capsys.readouterr().out
