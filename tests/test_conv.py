"""ACDCConv2d / ACDCSeparableConv2d against the equivalent dense nn.Conv2d built from to_dense() (float64)."""
import io

import pytest
import torch
from torch import nn

from torch_acdc.conv import ACDCConv2d, ACDCSeparableConv2d
from torch_acdc.recipe import param_groups

TOL = {"rtol": 1e-10, "atol": 1e-12}


def randomise_(module: nn.Module) -> nn.Module:
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    return module


def effective_bias(conv) -> torch.Tensor:
    pointwise = conv.pointwise if isinstance(conv, ACDCSeparableConv2d) else conv
    return pointwise.acdc(torch.zeros(1, conv.in_channels, dtype=torch.float64))[0]


@pytest.mark.parametrize("cin,cout,stride", [(6, 6, 1), (3, 10, 1), (12, 5, 2), (4, 1, (1, 3))])
def test_acdc_conv_matches_dense_conv2d(cin, cout, stride):
    conv = randomise_(ACDCConv2d(cin, cout, depth=3, stride=stride, dtype=torch.float64))
    ref = nn.Conv2d(cin, cout, 1, stride=stride, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(conv.to_dense())
        ref.bias.copy_(effective_bias(conv))
    assert conv.to_dense().shape == (cout, cin, 1, 1)
    for x in (torch.randn(2, cin, 7, 5, dtype=torch.float64), torch.randn(cin, 4, 4, dtype=torch.float64)):
        y = conv(x)
        torch.testing.assert_close(y, ref(x), **TOL)


def test_acdc_conv_is_a_channels_last_view_round_trip():
    """The stack runs on a permuted view (no copy of the input) and the result is channels-last strided."""
    conv = ACDCConv2d(8, 8)
    x = torch.randn(2, 8, 3, 5)
    y = conv(x)
    assert y.shape == (2, 8, 3, 5) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv.acdc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("kernel,stride,padding,dilation", [(3, 1, 1, 1), ((3, 5), 2, (0, 2), 1), (3, 1, 2, 2)])
def test_separable_conv_matches_dense_conv2d(kernel, stride, padding, dilation):
    conv = randomise_(ACDCSeparableConv2d(5, 7, kernel, stride=stride, padding=padding, dilation=dilation,
                                          depth=2, dtype=torch.float64))
    ref = nn.Conv2d(5, 7, kernel, stride=stride, padding=padding, dilation=dilation, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(conv.to_dense())
        ref.bias.copy_(effective_bias(conv))
    x = torch.randn(3, 5, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(conv(x), ref(x), **TOL)
    assert conv.to_dense().shape == ref.weight.shape


def test_gradcheck_float64():
    conv = randomise_(ACDCConv2d(3, 4, depth=2, dtype=torch.float64))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,), fast_mode=True)
    sep = randomise_(ACDCSeparableConv2d(3, 4, 3, padding=1, dtype=torch.float64))
    assert torch.autograd.gradcheck(sep, (torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True),),
                                    fast_mode=True)


def test_nn_conventions_params_repr_state_dict_recipe():
    conv = ACDCSeparableConv2d(4, 6, 3, padding=1, depth=3, bias=False, permutation="riffle")
    assert conv.pointwise.acdc.bias is None and conv.depthwise.bias is None
    assert sum(p.numel() for p in conv.parameters()) == 4 * 9 + 2 * 3 * 6  # depthwise + a, d of (3, 6)
    text = repr(ACDCConv2d(3, 8, depth=2, stride=2))
    assert "ACDCConv2d(\n  3, 8, stride=(2, 2)" in text and "StackedACDC(in_features=3, out_features=8, depth=2" in text
    groups = {g["name"] for g in param_groups(conv, lr=0.1)}
    assert groups == {"acdc_A", "acdc_D", "other"}
    buf = io.BytesIO()
    torch.save(conv.state_dict(), buf)
    buf.seek(0)
    other = ACDCSeparableConv2d(4, 6, 3, padding=1, depth=3, bias=False, permutation="random")
    other.load_state_dict(torch.load(buf))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(other(x), conv(x))
    assert ACDCConv2d(4, 4, dtype=torch.float64).acdc.a.dtype == torch.float64
    assert ACDCConv2d(4, 4)(torch.randn(1, 4, 2, 2, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_to_dense_needs_a_linear_stack():
    conv = ACDCConv2d(4, 4, activation="relu")
    assert conv(torch.randn(1, 4, 2, 2)).shape == (1, 4, 2, 2)
    with pytest.raises(RuntimeError, match="linear stack"):
        conv.to_dense()


@pytest.mark.parametrize("cls,args", [(ACDCConv2d, (3, 8)), (ACDCSeparableConv2d, (3, 8, 3))])
def test_shape_errors_like_nn_conv2d(cls, args):
    conv = cls(*args)
    with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input.*\[2, 3\]"):
        conv(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match=r"to have 3 channels, but got 4 channels instead"):
        conv(torch.randn(2, 4, 5, 5))
    with pytest.raises(RuntimeError):  # nn.Conv2d raises RuntimeError for the same inputs
        nn.Conv2d(3, 8, 1)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="stride"):
        ACDCConv2d(3, 8, stride=0)
