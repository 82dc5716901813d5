import math

import numpy as np
import pytest
import torch

from experiment_checks import single_threaded  # noqa: F401 (autouse fixture)
from torch_acdc import StackedACDC, acdc_reference
from torch_acdc.fit import fit_dense, matrix_evaluator, minimise, relative_error, stack_matrix


def test_relative_error_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    expected = np.linalg.norm(a.numpy() - b.numpy()) / np.linalg.norm(b.numpy())
    assert relative_error(a, b).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="matching shapes"):
        relative_error(a, b.T)


def test_lbfgs_recovers_an_exactly_representable_matrix():
    # W = C^T diag(d) C diag(a) is one ACDC layer: a depth-1 fit must reach ~0 error.
    g = torch.Generator().manual_seed(1)
    n = 16
    a, d = 1 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    weight = acdc_reference(torch.eye(n, dtype=torch.float64), a, d).T
    res = fit_dense(weight, 1, None, optimizer="lbfgs", steps=80, lr=1.0, seed=0, bias=False)
    assert res.error < 1e-6
    torch.testing.assert_close(res.module.to_dense(), weight, atol=1e-5, rtol=0)


def test_adam_history_and_final_error_are_consistent():
    weight = torch.randn(12, 12, generator=torch.Generator().manual_seed(2))
    res = fit_dense(weight, 4, "random", optimizer="adam", steps=60, lr=2e-2, seed=3)
    assert len(res.history) == 61
    assert res.error == res.history[-1]
    assert res.error == pytest.approx(relative_error(res.module.to_dense(), weight).item(), rel=1e-5)
    assert res.error < 0.9 * res.history[0]
    assert isinstance(res.module, StackedACDC) and res.module.activation is None


def test_deeper_random_stack_fits_better():
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errors = [fit_dense(weight, depth, "random", optimizer="lbfgs", steps=30, lr=1.0, seed=0, bias=False).error
              for depth in (1, 4)]
    assert errors[1] < 0.8 * errors[0]  # measured 0.87 -> 0.61


def test_rectangular_weight_and_bias_left_at_zero():
    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(5))
    res = fit_dense(weight, 3, "riffle", steps=20, lr=1e-2, seed=0)
    assert res.module.to_dense().shape == (6, 10)
    assert torch.count_nonzero(res.module.bias) == 0
    assert res.module.a.grad is None  # gradients are cleared after fitting


def test_seed_is_reproducible_and_does_not_touch_the_global_rng():
    weight = torch.randn(8, 8, generator=torch.Generator().manual_seed(6))
    state = torch.get_rng_state()
    r1 = fit_dense(weight, 3, "random", steps=10, lr=1e-2, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = fit_dense(weight, 3, "random", steps=10, lr=1e-2, seed=11)
    assert r1.history == r2.history
    assert torch.equal(r1.module.perms, r2.module.perms)


def test_dtype_and_device_follow_the_weight():
    weight = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    res = fit_dense(weight, 2, steps=1, lr=1e-3, seed=0)
    assert res.module.a.dtype == torch.float64 and res.module.a.device == weight.device


@pytest.mark.parametrize("bad, match", [
    (torch.randn(3), "2-D"),
    (torch.ones(3, 3, dtype=torch.long), "floating-point"),
    (torch.zeros(3, 3), "non-zero"),
])
def test_fit_dense_rejects_bad_weights(bad, match):
    with pytest.raises(ValueError, match=match):
        fit_dense(bad, 1, steps=1, lr=1e-2)


def test_minimise_rejects_unknown_optimizer_and_negative_steps():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        minimise([p], lambda: p.square().sum(), optimizer="sgd", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        minimise([p], lambda: p.square().sum(), steps=-1, lr=0.1)


@pytest.mark.parametrize("optimizer, lr, tol", [("adam", 0.1, 0.05), ("lbfgs", 1.0, 1e-6)])
def test_minimise_solves_a_quadratic(optimizer, lr, tol):
    target = torch.tensor([1.0, -2.0, 3.0])
    p = torch.zeros(3, requires_grad=True)
    hist = minimise([p], lambda: (p - target).square().sum(), optimizer=optimizer, steps=100, lr=lr,
                    transform=math.sqrt)
    assert len(hist) == 101 if optimizer == "adam" else len(hist) < 101  # L-BFGS stops at convergence
    assert hist[0] == pytest.approx(math.sqrt(14.0))
    assert hist[-1] < tol
    torch.testing.assert_close(p.detach(), target, atol=tol, rtol=0)


@pytest.mark.parametrize("layer", ["acdc", "afdf"])
@pytest.mark.parametrize("sizes, depth, permutation", [((12, 12), 1, "random"), ((7, 12), 4, "riffle"),
                                                       ((12, 5), 3, None), ((9, 9), 6, "random")])
def test_stack_matrix_equals_to_dense(layer, sizes, depth, permutation):
    from torch_acdc.afdf import StackedAFDF

    cls = StackedACDC if layer == "acdc" else StackedAFDF
    torch.manual_seed(0)
    m = cls(*sizes, depth, permutation=permutation, init="uniform", dtype=torch.float64)
    torch.testing.assert_close(stack_matrix(m), m.to_dense(), atol=1e-12, rtol=0)
    assert matrix_evaluator(m)().shape == (sizes[1], sizes[0])


def test_stack_matrix_gradients_match_to_dense():
    torch.manual_seed(1)
    m = StackedACDC(8, 8, 3, init="uniform", dtype=torch.float64)
    probe = torch.randn(8, 8, dtype=torch.float64)
    grads = []
    for fn in (stack_matrix, lambda mod: mod.to_dense()):
        m.zero_grad()
        (fn(m) * probe).sum().backward()
        grads.append((m.a.grad.clone(), m.d.grad.clone()))
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-10, rtol=0)


def test_stack_matrix_rejects_nonlinear_stacks():
    with pytest.raises(TypeError, match="linear StackedACDC"):
        stack_matrix(StackedACDC(4, 4, 2, activation="relu"))


def test_structured_and_dense_evaluation_give_the_same_fit(monkeypatch):
    import torch_acdc.fit as fit

    weight = torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    dense_path = fit_dense(weight, 3, "random", optimizer="adam", steps=5, lr=1e-2, seed=0)
    monkeypatch.setattr(fit, "DENSE_EVAL_MAX_FEATURES", 0)  # force module.to_dense()
    structured_path = fit_dense(weight, 3, "random", optimizer="adam", steps=5, lr=1e-2, seed=0)
    assert structured_path.history == pytest.approx(dense_path.history, rel=1e-9)


def test_lbfgs_that_blows_up_returns_its_best_point():
    """A line search that ends at a non-finite loss sets the parameters back to the best point evaluated."""
    from torch_acdc.fit import minimise

    x = torch.tensor([1.0, -2.0], requires_grad=True)
    history = minimise([x], lambda: x.pow(4).sum() * torch.exp(x.abs().sum()), optimizer="lbfgs", steps=10,
                       lr=50.0)  # a step of 50x the gradient: the objective overflows
    assert all(math.isfinite(v) for v in history) and history[-1] <= history[0]
    assert torch.isfinite(x).all()
    final = float(x.detach().pow(4).sum() * torch.exp(x.detach().abs().sum()))
    assert final == pytest.approx(history[-1])
