"""ACDCConv2d against nn.Conv2d: shapes and errors over kernel sizes, strides, paddings, dilations, padding modes,
batched and unbatched inputs; numerics against the dense nn.Conv2d built from to_dense() (float64)."""
import io
import itertools

import pytest
import torch
from torch import nn

from torch_acdc.conv import ACDCConv2d, ACDCSeparableConv2d
from torch_acdc.cost import layer_cost
from torch_acdc.recipe import param_groups

TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64


def randomise_(module: nn.Module) -> nn.Module:
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    return module


def dense_twin(conv: ACDCConv2d, **geometry) -> nn.Conv2d:
    """The nn.Conv2d with the same geometry, weight to_dense() and bias the stack's output at zero."""
    ref = nn.Conv2d(conv.in_channels, conv.out_channels, dtype=F64, **geometry)
    with torch.no_grad():
        ref.weight.copy_(conv.to_dense())
        ref.bias.copy_(conv.acdc(torch.zeros(1, conv.in_channels, dtype=F64))[0])
    return ref


def outcome(fn):
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - compared with nn.Conv2d's
        return error


def assert_same_error(mine, theirs, what):
    assert isinstance(mine, Exception), f"{what}: nn.Conv2d raised {theirs!r}, ACDCConv2d did not"
    assert type(mine) is type(theirs) and str(mine) == str(theirs), f"{what}: {mine!r} vs {theirs!r}"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("kernel_size", [1, 3, (1, 3), (3, 2)])
def test_matches_nn_conv2d(kernel_size, padding_mode):
    inputs = (torch.randn(2, 3, 7, 6, dtype=F64), torch.randn(3, 7, 6, dtype=F64))
    for stride, padding, dilation in itertools.product([1, 2, (2, 1)], [0, 1, (1, 2), "same", "valid"], [1, 2]):
        geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                        padding_mode=padding_mode)
        what = str(geometry)
        ref = outcome(lambda: nn.Conv2d(3, 5, dtype=F64, **geometry))
        conv = outcome(lambda: ACDCConv2d(3, 5, depth=3, dtype=F64, **geometry))
        if isinstance(ref, Exception):
            assert_same_error(conv, ref, what)
            continue
        assert not isinstance(conv, Exception), f"{what}: {conv!r}"
        for attr in ("kernel_size", "stride", "padding", "dilation", "padding_mode"):
            assert getattr(conv, attr) == getattr(ref, attr), what
        randomise_(conv)
        ref = dense_twin(conv, **geometry)
        assert conv.to_dense().shape == ref.weight.shape, what
        for x in inputs:
            expected = outcome(lambda: ref(x))
            if isinstance(expected, Exception):
                assert_same_error(outcome(lambda: conv(x)), expected, what)
            else:
                torch.testing.assert_close(conv(x), expected, **TOL, msg=what)


def test_positional_arguments_are_nn_conv2d_s():
    """ACDCConv2d(in, out, k, stride, padding, dilation, groups, bias, padding_mode) as nn.Conv2d."""
    conv = ACDCConv2d(4, 6, 3, 2, 1, 1, 1, False, "reflect")
    ref = nn.Conv2d(4, 6, 3, 2, 1, 1, 1, False, "reflect")
    assert (conv.kernel_size, conv.stride, conv.padding, conv.padding_mode) == (
        ref.kernel_size, ref.stride, ref.padding, ref.padding_mode)
    assert conv.acdc.bias is None and conv.acdc.depth == 2
    x = torch.randn(1, 4, 9, 9)
    assert conv(x).shape == ref(x).shape == (1, 6, 5, 5)
    assert repr(conv).startswith(
        "ACDCConv2d(\n  4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False, padding_mode=reflect")
    with pytest.raises(TypeError, match="positional"):
        ACDCConv2d(4, 6, 3, 1, 1, 1, 1, True, "zeros", 2)  # depth is keyword-only


@pytest.mark.parametrize("args,kwargs,match", [
    ((3, 8, 2, 1, False), {}, "padding=False.*old ACDCConv2d"),                    # old (..., depth, stride, bias)
    ((3, 8, 2, 1, 0, "riffle"), {}, "dilation='riffle'.*pass depth=, permutation="),  # old 6th: permutation
    ((3, 8, 1, 1, 0, 1, "relu"), {}, "groups='relu'"),                              # old 7th: activation
    ((3, 8, 1, 1, 0, 1, 1, "paper"), {}, "bias='paper'"),                          # old 8th: init
])
def test_old_positional_calls_get_a_migration_error(args, kwargs, match):
    with pytest.raises(TypeError, match=match):
        ACDCConv2d(*args, **kwargs)


def test_construction_and_input_errors():
    with pytest.raises(ValueError, match="groups=1 only, got groups=2"):
        ACDCConv2d(4, 4, 3, groups=2)
    for kwargs in ({"groups": 3}, {"padding": "full"}, {"padding_mode": "mirror"}, {"stride": 2, "padding": "same"}):
        with pytest.raises(ValueError) as ours:
            ACDCConv2d(4, 4, 3, **kwargs)
        with pytest.raises(ValueError) as theirs:
            nn.Conv2d(4, 4, 3, **kwargs)
        assert str(ours.value) == str(theirs.value)
    for kwargs in ({"stride": 0}, {"kernel_size": (0, 1)}, {"dilation": -1}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            ACDCConv2d(3, 8, **kwargs)
    for conv in (ACDCConv2d(3, 8), ACDCConv2d(3, 8, 3)):
        with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input.*\[2, 3\]"):
            conv(torch.randn(2, 3))
        with pytest.raises(RuntimeError, match=r"expected input\[2, 4, 5, 5\] to have 3 channels, but got 4"):
            conv(torch.randn(2, 4, 5, 5))
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        ACDCConv2d(3, 8, 5)(torch.randn(1, 3, 4, 4))


def test_kernel_one_is_a_channels_last_view_round_trip():
    """k = 1: the stack runs on a permuted view (no copy of the input), the result is channels-last strided."""
    conv = ACDCConv2d(8, 8)
    assert conv.depthwise is None
    x = torch.randn(2, 8, 3, 5)
    y = conv(x)
    assert y.shape == (2, 8, 3, 5) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv.acdc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def test_separable_form_is_depthwise_then_the_dense_mixer():
    conv = randomise_(ACDCConv2d(5, 7, (3, 5), stride=2, padding=(0, 2), dtype=F64))
    depthwise = nn.Conv2d(5, 5, (3, 5), stride=2, padding=(0, 2), groups=5, bias=False, dtype=F64)
    mixer = nn.Conv2d(5, 7, 1, dtype=F64)
    with torch.no_grad():
        depthwise.weight.copy_(conv.depthwise.weight)
        mixer.weight.copy_(conv.acdc.to_dense()[:, :, None, None])
        mixer.bias.copy_(conv.acdc(torch.zeros(1, 5, dtype=F64))[0])
    x = torch.randn(3, 5, 9, 8, dtype=F64)
    torch.testing.assert_close(conv(x), mixer(depthwise(x)), **TOL)


def test_gradcheck_float64():
    for conv in (ACDCConv2d(3, 4, dtype=F64), ACDCConv2d(3, 4, 3, padding=1, padding_mode="circular", dtype=F64)):
        x = torch.randn(1, 3, 3, 3, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(randomise_(conv), (x,), fast_mode=True)


def test_params_cost_reset_state_dict_recipe():
    conv = ACDCConv2d(4, 6, 3, padding=1, bias=False, depth=3, permutation="riffle")
    assert conv.acdc.bias is None and conv.depthwise.bias is None
    assert sum(p.numel() for p in conv.parameters()) == 4 * 9 + 3 * 2 * 6  # depthwise + a, d of (3, 6)
    assert sum(p.numel() for p in ACDCConv2d(4, 6).parameters()) == 2 * 3 * 6  # a, d, bias of (2, 6)
    cost = conv.cost((2, 4, 5, 5))
    assert cost.mult_adds == 2 * 25 * 4 * 9 + layer_cost(conv.acdc, (2 * 25, 4)).mult_adds
    assert cost.params == sum(p.numel() for p in conv.parameters())
    strided = ACDCConv2d(4, 6, stride=2)
    assert strided.cost((1, 4, 5, 5)).mult_adds == layer_cost(strided.acdc, (9, 4)).mult_adds  # 3 x 3 pixels
    assert {g["name"] for g in param_groups(conv, lr=0.1)} == {"acdc_A", "acdc_D", "other"}
    before = conv.depthwise.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.depthwise.weight)
    buf = io.BytesIO()
    torch.save(conv.state_dict(), buf)
    buf.seek(0)
    other = ACDCConv2d(4, 6, 3, padding=1, bias=False, depth=3)
    other.load_state_dict(torch.load(buf))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(other(x), conv(x))
    assert ACDCConv2d(4, 4, 3, dtype=F64).depthwise.weight.dtype == F64
    assert ACDCConv2d(4, 4)(torch.randn(1, 4, 2, 2, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_to_dense_needs_a_linear_stack():
    conv = ACDCConv2d(4, 4, activation="relu")
    assert conv(torch.randn(1, 4, 2, 2)).shape == (1, 4, 2, 2)
    with pytest.raises(RuntimeError, match="linear stack"):
        conv.to_dense()


def test_deprecated_separable_alias_and_its_old_state_dicts():
    with pytest.warns(FutureWarning, match="ACDCSeparableConv2d is deprecated: use ACDCConv2d"):
        old = ACDCSeparableConv2d(4, 6, 3, 1, 1, 1, 3, False)  # old positional order: ..., dilation, depth, bias
    assert isinstance(old, ACDCConv2d) and old.acdc.depth == 3 and old.acdc.bias is None
    state = {("pointwise." + k if k.startswith("acdc.") else k): v for k, v in old.state_dict().items()}
    assert "pointwise.acdc.a" in state  # the keys of the old two-module ACDCSeparableConv2d
    new = ACDCConv2d(4, 6, 3, padding=1, bias=False, depth=3)
    new.load_state_dict(state)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(new(x), old(x))
