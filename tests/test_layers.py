"""ACDC / StackedACDC modules: nn conventions, sizes, permutations, to_dense, state_dict, errors."""
import io

import pytest
import torch
from torch import nn

from torch_acdc import ACDC, StackedACDC, acdc_reference
from torch_acdc.permutations import inverse, make_permutation, riffle

from operator_checks import stack_by_hand


def test_acdc_module_matches_reference_and_conventions():
    layer = ACDC(10).double()
    assert (layer.in_features, layer.out_features) == (10, 10)
    assert "features=10" in repr(layer) and "init='paper'" in repr(layer)
    x = torch.randn(4, 10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), acdc_reference(x, layer.a, layer.d, layer.bias))
    torch.testing.assert_close(layer.to_dense(), acdc_reference(torch.eye(10, dtype=torch.float64), layer.a, layer.d).T)
    assert {n for n, _ in layer.named_parameters()} == {"a", "d", "bias"}
    assert ACDC(10, bias=False).bias is None


def test_inits():
    torch.manual_seed(0)
    p = ACDC(20000, init="paper")
    assert abs(p.a.mean().item() - 1) < 1e-3 and abs(p.a.std().item() - 1e-2) < 1e-3
    assert torch.equal(ACDC(5, init="identity").d, torch.ones(5))
    u = ACDC(1000, init="uniform").a
    assert u.min() >= -1 and u.max() <= 1 and u.std() > 0.5
    with pytest.raises(ValueError, match="unknown init"):
        ACDC(4, init="xavier")


@pytest.mark.parametrize("in_f,out_f", [(8, 8), (5, 12), (12, 5), (1, 3), (7, 1)])
@pytest.mark.parametrize("perm", ["random", "riffle", None])
def test_stack_to_dense_matches_forward_for_any_sizes(in_f, out_f, perm):
    s = StackedACDC(in_f, out_f, depth=3, permutation=perm).double()
    with torch.no_grad():
        s.bias.normal_()
    x = torch.randn(6, in_f, dtype=torch.float64)
    w = s.to_dense()
    assert w.shape == (out_f, in_f)
    zero = s(torch.zeros(1, in_f, dtype=torch.float64))
    torch.testing.assert_close(s(x), x @ w.T + zero)
    torch.testing.assert_close(s.to_dense(), (s(torch.eye(in_f, dtype=torch.float64)) - zero).T)


def test_stack_equals_chain_of_single_layers_with_permutations():
    """The fused gathers are exactly: layer, bias, activation, shuffle, next layer (zero-pad, truncate)."""
    s = StackedACDC(5, 7, depth=3, permutation="random", activation="relu").double()
    with torch.no_grad():
        s.bias.normal_()
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(s(x), stack_by_hand(s, x, acdc_reference))


def test_riffle_and_random_permutations():
    assert riffle(6).tolist() == [0, 3, 1, 4, 2, 5]
    assert riffle(5).tolist() == [0, 3, 1, 4, 2]
    q = make_permutation("random", 50)
    assert sorted(q.tolist()) == list(range(50))
    assert torch.equal(q[inverse(q)], torch.arange(50))
    with pytest.raises(ValueError, match="unknown permutation"):
        StackedACDC(4, 4, 2, permutation="butterfly")


def test_state_dict_roundtrip_is_bit_identical():
    s = StackedACDC(16, 16, depth=4, permutation="random", activation="tanh")
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    assert "perms" in s.state_dict()
    t = StackedACDC(16, 16, depth=4, permutation="random", activation="tanh")
    assert not torch.equal(t.perms, s.perms)
    t.load_state_dict(torch.load(buf))
    x = torch.randn(3, 16)
    assert torch.equal(s(x), t(x))


def test_to_dense_with_activation_is_an_error():
    with pytest.raises(RuntimeError, match="linear stack"):
        StackedACDC(4, 4, 2, activation=nn.ReLU()).to_dense()


@pytest.mark.parametrize("make,match", [
    (lambda: StackedACDC(4, 4, 0), "depth must be a positive integer"),
    (lambda: StackedACDC(0, 4, 2), "in_features"),
    (lambda: StackedACDC(4, 4, 2, activation="swishy"), "unknown activation"),
    (lambda: ACDC(0), "features"),
])
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_forward_errors_name_expected_and_given():
    s = StackedACDC(6, 3, 2)
    with pytest.raises(ValueError, match=r"last dimension 6, got input of shape \(2, 5\)"):
        s(torch.randn(2, 5))
    with pytest.raises(TypeError, match="torch.int64"):
        s(torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.complex64"):
        ACDC(6)(torch.ones(2, 6, dtype=torch.complex64))


def test_zero_size_batch_and_training_step():
    s = StackedACDC(9, 4, depth=2)
    x = torch.randn(0, 9, requires_grad=True)
    y = s(x)
    assert y.shape == (0, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 9)
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    x = torch.randn(32, 9)
    target = torch.randn(32, 4)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (s(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_bf16_input_returns_bf16():
    s = StackedACDC(16, 16, 2)
    x = torch.randn(4, 16)
    y = s(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), s(x.bfloat16().float()), rtol=2e-2, atol=2e-2)


def test_stack_gather_cache_follows_perms():
    """The fused between-layer gathers are cached per module; loading other permutations (in place, so only
    the buffer's version changes) must be picked up by the next forward."""
    torch.manual_seed(0)
    a, b = StackedACDC(16, 16, depth=3), StackedACDC(16, 16, depth=3)
    x = torch.randn(4, 16)
    b(x)  # fills b's cache with its own permutations
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))


def test_stack_gather_cache_never_keeps_inference_tensors():
    """Gathers built under inference mode are not cached: training afterwards saves them for backward."""
    m, x = StackedACDC(12, 12, depth=3), torch.randn(2, 12)
    with torch.inference_mode():
        m(x)
    m(x).sum().backward()
    assert m.a.grad is not None


def test_awkward_widths_pad_to_a_fast_length_or_warn_once():
    """A stack whose width is free (in != out) takes a fast FFT length instead of one with a large prime
    factor; a square layer of such a size warns once, naming a fast size."""
    import warnings

    from torch_acdc import ACDC, StackedACDC
    from torch_acdc.layers import stack_width
    from torch_acdc.transform import fast_length, largest_prime_factor

    assert largest_prime_factor(4097) == 241 and fast_length(4097) == 4116 and fast_length(4096) == 4096
    assert stack_width(10, 4097) == 4116 and stack_width(4097, 4097) == 4097 and stack_width(784, 10) == 784
    stack = StackedACDC(10, 4097, depth=2)
    assert stack.features == 4116 and stack(torch.randn(2, 10)).shape == (2, 4097)
    with pytest.warns(RuntimeWarning, match="prime factor 241.*4116"):
        ACDC(4097)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ACDC(4097)  # once per size
        ACDC(4096)
