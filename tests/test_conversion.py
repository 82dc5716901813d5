"""torch_acdc.convert on toy CNNs and an MLP: selection (kernel sizes, first conv), exact wiring (vs dense weights
from to_dense()), bias carry-over, fitting (k x k too), report numbers, state_dict round trip."""
import copy
import io

import pytest
import torch
from torch import nn

from torch_acdc import StackedACDC
from torch_acdc.conv import ACDCConv2d
from torch_acdc.conversion import ConversionReport, convert, separable_factors
from torch_acdc.cost import layer_cost, model_cost
from torch_acdc.fit import relative_error
from torch_acdc.recipe import param_groups


def mlp(dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(dtype)


class ToyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.expand = nn.Conv2d(16, 64, 1)
        self.reduce = nn.Conv2d(64, 64, 1, stride=2, bias=False)
        self.grouped = nn.Conv2d(64, 64, 1, groups=4)
        self.fc = nn.Linear(64, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.relu(self.expand(torch.relu(self.stem(x))))
        x = self.grouped(torch.relu(self.reduce(x)))
        return self.head(torch.relu(self.fc(x.mean((2, 3)))))


def cnn(dtype=torch.float32) -> ToyCNN:
    torch.manual_seed(0)
    return ToyCNN().to(dtype)


def densified(original: nn.Module, converted: nn.Module, report: ConversionReport) -> nn.Module:
    """The original model with each replaced module's weight/bias set to its replacement's effective ones."""
    ref = copy.deepcopy(original)
    with torch.no_grad():
        for r in report.replaced:
            old, new = ref.get_submodule(r.name), converted.get_submodule(r.name)
            stack = new.acdc if isinstance(new, ACDCConv2d) else new
            old.weight.copy_(new.to_dense().reshape(old.weight.shape))
            if old.bias is not None:
                old.bias.copy_(stack(torch.zeros(1, r.in_features, dtype=old.weight.dtype))[0])
    return ref


def test_mlp_selection_wiring_and_report():
    model = mlp(torch.float64)
    converted, report = convert(model, min_features=64, depth=3, seed=0)
    assert isinstance(model[0], nn.Linear)  # not in place
    assert [r.name for r in report.replaced] == ["0", "2"]
    assert isinstance(converted[0], StackedACDC) and isinstance(converted[2], StackedACDC)
    assert converted[0].depth == 3 and (converted[0].in_features, converted[0].out_features) == (100, 256)
    assert isinstance(converted[4], nn.Linear)
    assert report.skipped == [("4", "min(in, out) = 10 < min_features = 64")]
    x = torch.randn(5, 100, dtype=torch.float64)
    torch.testing.assert_close(converted(x), densified(model, converted, report)(x), rtol=1e-10, atol=1e-10)
    # the original biases are carried over exactly: stack(0) == bias
    torch.testing.assert_close(converted[2](torch.zeros(1, 256, dtype=torch.float64))[0], model[2].bias)
    first = report.replaced[0]
    assert (first.params_before, first.params_after) == (100 * 256 + 256, 3 * 3 * 256)
    assert first.madds_before == 100 * 256
    assert first.madds_after == layer_cost(converted[0], (1, 100)).mult_adds
    assert report.model_params_before == sum(p.numel() for p in model.parameters())
    assert report.model_params_after == sum(p.numel() for p in converted.parameters())
    assert report.model_params_after < report.model_params_before / 10  # 94218 -> 7178
    text = str(report)
    assert "replaced 2 module(s), skipped 1" in text and "| 2 | Linear | 256 | 256 |" in text
    assert report.as_dict()["replaced"][1]["params_after"] == 3 * 3 * 256
    assert {g["name"] for g in param_groups(converted, lr=0.1)} == {"acdc_A", "acdc_D", "other"}


def test_cnn_converts_only_plain_1x1_convs_and_linears_by_default():
    model = cnn(torch.float64)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    converted, report = convert(model, min_features=16, seed=1, example_input=x)
    assert [r.name for r in report.replaced] == ["expand", "reduce", "fc"]
    assert dict(report.skipped) == {"stem": "first convolution of the model (keep_first_conv=True)",
                                    "grouped": "grouped convolution (groups=4)",
                                    "head": "min(in, out) = 10 < min_features = 16"}
    assert isinstance(converted.stem, nn.Conv2d) and isinstance(converted.grouped, nn.Conv2d)
    assert isinstance(converted.expand, ACDCConv2d) and converted.reduce.stride == (2, 2)
    assert converted.reduce.acdc.bias is None and isinstance(converted.fc, StackedACDC)
    torch.testing.assert_close(converted(x), densified(model, converted, report)(x), rtol=1e-10, atol=1e-10)
    # rows seen in the example forward: pixels for the convs (stride 2 quarters them), samples for fc
    assert [r.rows for r in report.replaced] == [2 * 8 * 8, 2 * 4 * 4, 2]
    before, after = report.madds_per_forward
    assert before == 128 * 16 * 64 + 32 * 64 * 64 + 2 * 64 * 128
    # the same numbers as the cost model's whole-model walk (ACDCConv2d declares cost(input_shape))
    costs = {name: c.mult_adds for name, _, c in model_cost(converted, x.shape, dtype=torch.float64).layers}
    assert after == pytest.approx(costs["expand"] + costs["reduce"] + costs["fc"])
    assert costs["reduce"] == pytest.approx(layer_cost(converted.reduce.acdc, (2 * 4 * 4, 64)).mult_adds)
    assert "multiply-adds per forward" in report.summary()


def test_pattern_and_saving_rules():
    model = cnn()
    converted, report = convert(model, pattern=r"^(expand|fc)$", min_features=1)
    assert [r.name for r in report.replaced] == ["expand", "fc"]
    assert dict(report.skipped)["reduce"] == "name does not match pattern"
    # a deep stack on a small layer would have more parameters than the dense layer: left alone
    _, report = convert(nn.Sequential(nn.Linear(64, 64)), min_features=1, depth=32)
    assert report.replaced == [] and report.skipped == [("0", "no parameter saving at this depth")]
    _, report = convert(cnn(), min_features=1, keep_first_conv=False)
    assert dict(report.skipped)["stem"] == "kernel_size (3, 3) not in conv_kernel_sizes ((1, 1),)"
    # padded 1x1 convolutions keep their padding and padding mode
    padded = nn.Sequential(nn.Conv2d(8, 8, 1, padding=1, padding_mode="reflect", dtype=torch.float64))
    skipped = convert(padded, min_features=1)[1].skipped
    assert skipped == [("0", "first convolution of the model (keep_first_conv=True)")]
    converted, report = convert(padded, min_features=1, keep_first_conv=False)
    assert converted[0].padding == (1, 1) and converted[0].padding_mode == "reflect"
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(converted(x), densified(padded, converted, report)(x), rtol=1e-10, atol=1e-10)


def test_fit_initialises_from_the_dense_weight():
    torch.manual_seed(3)
    target = StackedACDC(48, 32, 2, init="uniform", bias=False).double()
    model = nn.Sequential(nn.Linear(48, 32, dtype=torch.float64))
    with torch.no_grad():
        model[0].weight.copy_(target.to_dense())
    fitted, report = convert(model, min_features=1, depth=2, fit=True, fit_steps=15, seed=0)
    unfitted, _ = convert(model, min_features=1, depth=2, seed=0)
    error = report.replaced[0].fit_error
    assert error == pytest.approx(relative_error(fitted[0].to_dense(), model[0].weight).item(), rel=1e-6)
    assert error < 0.5 * relative_error(unfitted[0].to_dense(), model[0].weight).item()
    x = torch.randn(64, 48, dtype=torch.float64)
    assert (fitted(x) - model(x)).norm() < 0.5 * (unfitted(x) - model(x)).norm()
    torch.testing.assert_close(fitted[0](torch.zeros(1, 48, dtype=torch.float64))[0], model[0].bias)


def test_state_dict_saves_and_reloads_into_a_fresh_conversion():
    converted, _ = convert(cnn(), min_features=16, seed=5)
    buf = io.BytesIO()
    torch.save(converted.state_dict(), buf)
    buf.seek(0)
    fresh, _ = convert(cnn(), min_features=16, seed=6)  # different permutations until loaded
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(fresh(x), converted(x))
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(x), converted(x))


def test_inplace_shared_modules_and_whole_model():
    shared = nn.Linear(128, 128)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model.eval()
    same, report = convert(model, min_features=1, inplace=True)
    assert same is model and model[0] is model[2] and isinstance(model[0], StackedACDC)
    assert len(report.replaced) == 1 and not model[0].training
    layer, report = convert(nn.Linear(128, 128), min_features=1)
    assert isinstance(layer, StackedACDC) and report.replaced[0].name == ""


def test_argument_errors():
    with pytest.raises(ValueError, match="depth"):
        convert(mlp(), depth=0)
    with pytest.raises(ValueError, match="fit_optimizer"):
        convert(mlp(), fit_optimizer="sgd")
    for sizes in (3, ("3",), [(3, 3, 3)], (0,)):
        with pytest.raises(ValueError, match=r"conv_kernel_sizes must be .* e\.g\. \(1, 3\)"):
            convert(cnn(), conv_kernel_sizes=sizes)


class KxKNet(nn.Module):
    """A stem, a 3x3 body with padding modes, a non-square kernel, a 1x1 and a 5x5 that stays unselected."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, stride=2, padding=1, padding_mode="reflect")
        self.wide = nn.Conv2d(32, 32, (1, 3), padding="same", bias=False)
        self.point = nn.Conv2d(32, 32, 1)
        self.big = nn.Conv2d(32, 16, 5, padding=2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        for conv in (self.stem, self.body, self.wide, self.point, self.big):
            x = torch.relu(conv(x))
        return self.dw(x)


def kxk_net() -> KxKNet:
    torch.manual_seed(0)
    return KxKNet().double()


def test_kxk_convs_are_opt_in_and_exact_depthwise_plus_mixer():
    model = kxk_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    converted, report = convert(model, min_features=16, conv_kernel_sizes=(1, 3, (1, 3)), seed=2,
                                example_input=x)
    assert [(r.name, r.kind) for r in report.replaced] == [
        ("body", "Conv2d 3x3"), ("wide", "Conv2d 1x3"), ("point", "Conv2d 1x1")]
    assert dict(report.skipped) == {
        "stem": "first convolution of the model (keep_first_conv=True)",
        "big": "kernel_size (5, 5) not in conv_kernel_sizes ((1, 1), (1, 3), (3, 3))",
        "dw": "grouped convolution (groups=16)"}
    body = converted.body
    assert isinstance(body, ACDCConv2d) and body.depthwise.groups == 16
    assert (body.kernel_size, body.stride, body.padding, body.padding_mode) == ((3, 3), (2, 2), (1, 1), "reflect")
    assert converted.wide.padding == "same" and converted.wide.acdc.bias is None
    torch.testing.assert_close(converted(x), densified(model, converted, report)(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(converted.body.acdc(torch.zeros(1, 16, dtype=torch.float64))[0], model.body.bias)
    first = report.replaced[0]
    assert (first.params_before, first.params_after) == (32 * 16 * 9 + 32, 16 * 9 + 2 * 3 * 32)
    assert first.madds_before == 16 * 32 * 9  # per output pixel
    assert first.madds_after == 16 * 9 + layer_cost(body.acdc, (1, 16)).mult_adds
    assert [r.rows for r in report.replaced] == [2 * 4 * 4] * 3
    costs = {name: c.mult_adds for name, _, c in model_cost(converted, x.shape, dtype=torch.float64).layers}
    before, after = report.madds_per_forward
    assert before == 32 * (16 * 32 * 9 + 32 * 32 * 3 + 32 * 32)
    assert after == pytest.approx(costs["body"] + costs["wide"] + costs["point"])
    # keep_first_conv=False: the stem too (3 input channels, so min_features=1)
    _, report = convert(model, min_features=1, conv_kernel_sizes=(3,), keep_first_conv=False)
    assert [r.name for r in report.replaced] == ["stem", "body"]


def test_separable_factors_and_fitting_a_kxk_conv():
    torch.manual_seed(4)
    mixer = StackedACDC(16, 24, 2, init="uniform", bias=False).double().to_dense()
    kernels = torch.randn(16, 1, 3, 3, dtype=torch.float64)
    weight = mixer[:, :, None, None] * kernels.transpose(0, 1)  # exactly separable
    p, k = separable_factors(weight)
    assert p.shape == (24, 16) and k.shape == (16, 1, 3, 3)
    torch.testing.assert_close(p[:, :, None, None] * k.transpose(0, 1), weight)
    torch.testing.assert_close(k.flatten(1).norm(dim=1), torch.ones(16, dtype=torch.float64))
    model = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, dtype=torch.float64))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    kwargs = dict(min_features=1, conv_kernel_sizes=(3,), keep_first_conv=False, seed=0)
    fitted, report = convert(model, fit=True, fit_steps=15, **kwargs)
    unfitted, _ = convert(model, **kwargs)
    error = report.replaced[0].fit_error
    assert error == pytest.approx(relative_error(fitted[0].to_dense().flatten(1), weight.flatten(1)).item())
    assert error < 0.5 * relative_error(unfitted[0].to_dense().flatten(1), weight.flatten(1)).item()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    assert (fitted(x) - model(x)).norm() < 0.5 * (unfitted(x) - model(x)).norm()


def test_lstm_is_converted_with_its_configuration_or_kept_and_listed():
    from torch_acdc import ACDCLSTM

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 64)
            self.rnn = nn.LSTM(64, 128, num_layers=2, batch_first=True, dropout=0.1)
            self.bi = nn.LSTM(64, 128, bidirectional=True)
            self.gru = nn.GRU(64, 64)
            self.head = nn.Linear(128, 50)

        def forward(self, tokens):
            h, _ = self.rnn(self.emb(tokens))
            return self.head(h)

    model = Net()
    converted, report = convert(model, min_features=32)
    assert isinstance(converted.rnn, ACDCLSTM)
    assert (converted.rnn.num_layers, converted.rnn.batch_first, converted.rnn.dropout) == (2, True, 0.1)
    skipped = dict(report.skipped)
    assert "bidirectional" in skipped["bi"] and "no ACDC counterpart for GRU" in skipped["gru"]
    assert "no ACDC counterpart for Embedding" in skipped["emb"]
    replaced = {r.name: r for r in report.replaced}
    assert replaced["rnn"].kind == "LSTM" and replaced["rnn"].params_after < replaced["rnn"].params_before
    assert converted(torch.randint(0, 50, (3, 7))).shape == (3, 7, 50)
    # the dense gate biases are carried over: with zero input and state the gates equal b_ih + b_hh
    with torch.no_grad():
        cell, dense = converted.rnn.cells[0], model.rnn
        gates = cell.ih(torch.zeros(1, 64))[0]
        torch.testing.assert_close(gates, dense.bias_ih_l0 + dense.bias_hh_l0)
    kept, report = convert(model, min_features=32, lstm=False)
    assert isinstance(kept.rnn, nn.LSTM) and dict(report.skipped)["rnn"] == "LSTM kept (lstm=False)"
