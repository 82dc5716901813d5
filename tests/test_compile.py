"""torch.compile(fullgraph=True) on models with ACDC layers: no graph breaks, same outputs and gradients."""
import torch
from torch import nn

from torch_acdc import ACDC, StackedACDC


def _grads(model, x):
    for p in model.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.square().sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def test_fullgraph_compile_matches_eager_outputs_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), ACDC(16), nn.ReLU(),
                          StackedACDC(16, 10, depth=3, permutation="random", activation="relu"),
                          StackedACDC(10, 10, depth=2, permutation="riffle")).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break is an error
    y_e, gx_e, gp_e = _grads(model, x)
    y_c, gx_c, gp_c = _grads(compiled, x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_c, gx_e, rtol=1e-10, atol=1e-10)
    for a, b in zip(gp_c, gp_e):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_custom_ops_pass_opcheck():
    """torch.library.opcheck: schema, fake (meta) kernels and autograd registration are consistent."""
    v = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    a = torch.randn(7, dtype=torch.float64, requires_grad=True)
    d = torch.randn(7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    p = torch.randperm(7)
    ip = torch.argsort(p)
    q = torch.randperm(7)
    iq = torch.argsort(q)
    for bias in (None, b):
        for param in [(None, None), (q, iq)]:
            for idx in [(None, None, None, None), (p, ip, ip, p), (p, ip, None, None)]:
                torch.library.opcheck(torch.ops.torch_acdc.acdc, (v, a, d, bias, *param, *idx))
                g = torch.randn(3, 7, dtype=torch.float64)
                torch.library.opcheck(torch.ops.torch_acdc.acdc_grads, (g, v.detach(), a.detach(), d.detach(),
                                                                        *param, *idx[:2], idx[3], bias is not None))


def test_custom_op_gradients_match_gradcheck():
    args = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 5), (5,), (5,), (5,))]
    p = torch.randperm(5)
    assert torch.autograd.gradcheck(
        lambda x, a, d, b: torch.ops.torch_acdc.acdc(x, a, d, b, p, torch.argsort(p), p, torch.argsort(p), None,
                                                     None), args)
