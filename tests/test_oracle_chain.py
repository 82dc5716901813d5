"""The oracle chain, per operation and for every layer kind (ACDC, AFDF): dense float64 reference <-> pure-torch
path <-> native kernels <-> torch.compile <-> torch.export. Each link compares outputs and gradients of the
same layer on the same input, so a fault anywhere in the chain names its link."""
import pytest
import torch

from torch_acdc import ACDC, AFDF, StackedACDC, StackedAFDF, acdc_reference, afdf_reference, dispatch, native

F64 = {"dtype": torch.float64}
LAYERS = {"acdc": (ACDC, StackedACDC, acdc_reference), "afdf": (AFDF, StackedAFDF, afdf_reference)}


def _layer(kind: str, stacked: bool):
    torch.manual_seed(0)
    single, stack, _ = LAYERS[kind]
    layer = stack(12, 12, depth=3, **F64) if stacked else single(12, **F64)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-1, 1)
    return layer


def _outputs_and_grads(fn, layer, x):
    layer.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    y = fn(xg)
    y.square().sum().backward()
    return [y.detach(), xg.grad, *[p.grad for p in layer.parameters()]]


def _close(a, b, tol):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", LAYERS)
def test_reference_to_torch_path(kind):
    layer = _layer(kind, stacked=False)
    x = torch.randn(5, 12, **F64)
    reference = LAYERS[kind][2]
    with native.use_native(False), torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x, layer.a, layer.d, layer.bias), rtol=1e-10, atol=1e-10)
        assert dispatch.explain(layer, x).kernel == "torch"


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("stacked", [False, True])
def test_torch_path_to_native(kind, stacked):
    if not native.available():
        pytest.skip("native kernels could not be built")
    layer = _layer(kind, stacked)
    x = torch.randn(4, 3, 12, **F64)
    with native.use_native(False):
        ref = _outputs_and_grads(layer, layer, x)
    fast = _outputs_and_grads(layer, layer, x)
    _close(fast, ref, 1e-12)
    with torch.no_grad():
        assert dispatch.explain(layer, x).kernel == "native"


@pytest.mark.parametrize("kind", LAYERS)
def test_eager_to_compiled(kind):
    layer = _layer(kind, stacked=True)
    x = torch.randn(4, 12, **F64)
    eager = _outputs_and_grads(layer, layer, x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=(kind == "acdc"))
    _close(_outputs_and_grads(compiled, layer, x), eager, 1e-10)


@pytest.mark.parametrize("kind", LAYERS)
def test_eager_to_exported(kind):
    layer = _layer(kind, stacked=True)
    x = torch.randn(4, 12, **F64)
    with torch.no_grad():
        expected = layer(x)
        exported = torch.export.export(layer, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-10, atol=1e-10)
