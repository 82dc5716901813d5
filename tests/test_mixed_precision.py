"""bf16/fp16 inputs and torch.autocast: transforms run in fp32 inside, outputs come back in the input dtype."""
import pytest
import torch
from torch import nn

from torch_acdc import ACDC, StackedACDC, acdc


def _rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_low_precision_inputs_match_fp32(dtype, tol):
    torch.manual_seed(0)
    layer = StackedACDC(48, 48, depth=3)
    x = torch.randn(16, 48)
    xl = x.to(dtype)
    y = layer(xl)
    assert y.dtype == dtype
    # the only error is the rounding of input and output: compare with fp32 on the rounded input
    assert _rel(y, layer(xl.float())) <= tol
    y.float().square().sum().backward()
    assert layer.a.grad.dtype == torch.float32 and torch.isfinite(layer.a.grad).all()


def test_autocast_cpu_bf16_forward_and_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), ACDC(64), nn.ReLU(), StackedACDC(64, 16, 3), nn.Linear(16, 4))
    x = torch.randn(8, 32)
    ref = model(x)
    ref.square().sum().backward()
    ref_grad = model[1].d.grad.clone()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model[0](x)
        assert h.dtype == torch.bfloat16
        assert model[1](h).dtype == torch.bfloat16  # ACDC returns its input's dtype
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert _rel(y, ref) < 3e-2
    y.float().square().sum().backward()
    assert model[1].d.grad.dtype == torch.float32
    assert _rel(model[1].d.grad, ref_grad) < 0.1


def test_mixed_dtypes_compute_in_the_wider_type():
    x = torch.randn(3, 8, dtype=torch.float16)
    a = torch.randn(8, dtype=torch.float64)
    d = torch.randn(8, dtype=torch.float64)
    y = acdc(x, a, d)
    assert y.dtype == torch.float16
