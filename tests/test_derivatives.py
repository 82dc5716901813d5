"""torch_acdc.derivatives against torch.func in float64 (to 1e-10)."""
import pytest
import torch
from torch.func import hessian, jacfwd, jacrev

from torch_acdc import ACDC, StackedACDC
from torch_acdc.derivatives import (ggn_vp, hvp, least_squares_hessian, linear_jacobian, param_ggn_vp,
                                    param_hvp)

TOL = 1e-10


def _close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


@pytest.fixture
def stack():
    torch.manual_seed(0)
    return StackedACDC(12, 12, 3, init="uniform").double()


@pytest.mark.parametrize("in_f,out_f", [(12, 12), (7, 12), (12, 5)])
def test_linear_jacobian_equals_jacrev_and_jacfwd(in_f, out_f):
    torch.manual_seed(1)
    s = StackedACDC(in_f, out_f, 4, init="uniform").double()
    x = torch.randn(in_f, dtype=torch.float64)
    w = linear_jacobian(s)
    assert w.shape == (out_f, in_f)
    _close(w, jacrev(s)(x))
    _close(w, jacfwd(s)(x))


def test_linear_jacobian_of_generic_callable():
    torch.manual_seed(2)
    layers = torch.nn.Sequential(ACDC(8, init="uniform"), torch.nn.Linear(8, 5)).double()
    w = linear_jacobian(layers, 8)
    _close(w, jacrev(layers)(torch.randn(8, dtype=torch.float64)))


def test_linear_jacobian_rejects_nonlinear_maps():
    s = StackedACDC(8, 8, 2, activation="tanh", init="uniform").double()
    with pytest.raises(ValueError, match="affine"):
        linear_jacobian(s)
    with pytest.raises(ValueError, match="in_features"):
        linear_jacobian(lambda x: x)


def test_least_squares_hessian_equals_torch_func(stack):
    x, y = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    h = hessian(lambda v: (stack(v) - y).pow(2).sum())(x)
    _close(least_squares_hessian(stack), h)


@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_hvp_input_equals_hessian(method):
    torch.manual_seed(3)
    s = StackedACDC(10, 10, 3, activation="tanh", init="uniform").double()
    x, v = torch.randn(2, 10, dtype=torch.float64).unbind(0)

    def f(u):
        return s(u).sin().sum()

    _close(hvp(f, x, v, method=method), hessian(f)(x) @ v)


@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_param_hvp_equals_hessian(method):
    torch.manual_seed(4)
    s = StackedACDC(6, 6, 2, activation="tanh", init="uniform").double()
    x = torch.randn(3, 6, dtype=torch.float64)
    params = {k: p.detach() for k, p in s.named_parameters()}
    v = {k: torch.randn_like(p) for k, p in params.items()}

    def loss(call):
        return call(x).pow(2).sum()

    hv = param_hvp(s, loss, v, method=method)
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    sizes = [p.numel() for p in params.values()]

    def f(theta):
        chunks = dict(zip(params, [c.view_as(p) for c, p in zip(theta.split(sizes), params.values())]))
        return torch.func.functional_call(s, chunks, (x,)).pow(2).sum()

    expected = hessian(f)(flat) @ torch.cat([t.reshape(-1) for t in v.values()])
    _close(torch.cat([hv[k].reshape(-1) for k in params]), expected)


def test_ggn_vp_equals_jacobian_form():
    torch.manual_seed(5)
    s = StackedACDC(8, 8, 2, activation="tanh", init="uniform").double()
    x, v = torch.randn(2, 8, dtype=torch.float64).unbind(0)
    target = torch.randn(8, dtype=torch.float64)

    def loss(z):
        return torch.log_softmax(z, -1).mul(target.softmax(-1)).sum().neg()

    j = jacrev(s)(x)
    expected = j.T @ hessian(loss)(s(x)) @ j @ v
    _close(ggn_vp(s, loss, x, v), expected)


def test_param_ggn_vp_equals_jacobian_form(stack):
    x = torch.randn(4, 12, dtype=torch.float64)
    v = {k: torch.randn_like(p) for k, p in stack.named_parameters()}
    g = param_ggn_vp(stack, x, lambda z: z.pow(2).sum() / 2, v)  # H_L = I: G = J^T J
    params = {k: p.detach() for k, p in stack.named_parameters()}
    jac = jacrev(lambda p: torch.func.functional_call(stack, p, (x,)))(params)
    jv = sum((jac[k].reshape(48, -1) @ v[k].reshape(-1)) for k in params)
    for k in params:
        _close(g[k], (jac[k].reshape(48, -1).T @ jv).view_as(params[k]))


def test_errors_name_expected_and_given():
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(4,\)"):
        hvp(lambda u: u.sum(), torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="method"):
        hvp(lambda u: u.sum(), torch.zeros(3), torch.zeros(3), method="sideways")
    with pytest.raises(ValueError, match="scalar"):
        hvp(lambda u: u * 2, torch.zeros(3), torch.zeros(3))
    s = StackedACDC(4, 4, 1)
    with pytest.raises(ValueError, match="missing"):
        param_hvp(s, lambda call: call(torch.zeros(4)).sum(), {"a": torch.zeros(1, 4)})
