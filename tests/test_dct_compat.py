"""torch-dct drop-in: conventions against scipy.fftpack in float64 (1e-10), inverses, gradients, LinearDCT."""
import numpy as np
import pytest
import torch
from scipy import fftpack
from torch.autograd import gradcheck, gradgradcheck

import torch_acdc.dct_compat as torch_dct

F64 = torch.float64
LENGTHS = list(range(1, 34)) + [64, 97, 128, 257, 1000]  # every small length (odd, prime, even), some large
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _np(t):
    return t.detach().numpy()


def _idct_ref(x, norm, axes):
    """torch-dct's idct: the inverse of its dct, i.e. scipy's DCT-III divided by 2N per axis when norm=None."""
    y = fftpack.idctn(x, type=2, axes=axes, norm=norm)
    if norm is None:
        y = y / np.prod([2 * x.shape[a] for a in axes])
    return y


@pytest.mark.parametrize("norm", [None, "ortho"])
def test_dct_and_idct_match_scipy_fftpack_for_many_lengths(norm):
    rng = np.random.default_rng(0)
    for n in LENGTHS:
        x = rng.standard_normal((3, n))
        t = torch.from_numpy(x)
        np.testing.assert_allclose(_np(torch_dct.dct(t, norm=norm)), fftpack.dct(x, type=2, norm=norm), **TOL)
        np.testing.assert_allclose(_np(torch_dct.idct(t, norm=norm)), _idct_ref(x, norm, (-1,)), **TOL)
        torch.testing.assert_close(torch_dct.idct(torch_dct.dct(t, norm), norm), t, **TOL)


def test_default_norm_is_none_and_ortho_is_our_fast_transform():
    x = torch.randn(2, 12, dtype=F64)
    assert torch.equal(torch_dct.dct(x), torch_dct.dct(x, norm=None))
    assert torch.equal(torch_dct.dct(x, norm="ortho"), __import__("torch_acdc").dct(x))
    # unnormalised DCT-II: y[k] = 2 sum_m x[m] cos(pi k (2m+1) / 2N), written out
    n = 12
    k, m = torch.meshgrid(torch.arange(n, dtype=F64), torch.arange(n, dtype=F64), indexing="ij")
    explicit = x @ (2 * torch.cos(torch.pi * k * (2 * m + 1) / (2 * n))).T
    torch.testing.assert_close(torch_dct.dct(x), explicit, **TOL)


@pytest.mark.parametrize("norm", [None, "ortho"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 1, 11), (4, 13, 2)])
def test_2d_matches_scipy_over_the_last_two_dims(norm, shape):
    x = np.random.default_rng(1).standard_normal(shape)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(_np(torch_dct.dct_2d(t, norm)), fftpack.dctn(x, type=2, axes=(-2, -1), norm=norm), **TOL)
    np.testing.assert_allclose(_np(torch_dct.idct_2d(t, norm)), _idct_ref(x, norm, (-2, -1)), **TOL)
    torch.testing.assert_close(torch_dct.idct_2d(torch_dct.dct_2d(t, norm), norm), t, **TOL)


@pytest.mark.parametrize("norm", [None, "ortho"])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 1, 6), (2, 3, 2, 5)])
def test_3d_matches_scipy_over_the_last_three_dims(norm, shape):
    x = np.random.default_rng(2).standard_normal(shape)
    t = torch.from_numpy(x)
    axes = (-3, -2, -1)
    np.testing.assert_allclose(_np(torch_dct.dct_3d(t, norm)), fftpack.dctn(x, type=2, axes=axes, norm=norm), **TOL)
    np.testing.assert_allclose(_np(torch_dct.idct_3d(t, norm)), _idct_ref(x, norm, axes), **TOL)
    torch.testing.assert_close(torch_dct.idct_3d(torch_dct.dct_3d(t, norm), norm), t, **TOL)


def test_dct1_matches_scipy_type1_and_idct1_inverts():
    rng = np.random.default_rng(3)
    for n in [2, 3, 4, 5, 7, 16, 31, 100]:
        x = rng.standard_normal((2, n))
        t = torch.from_numpy(x)
        np.testing.assert_allclose(_np(torch_dct.dct1(t)), fftpack.dct(x, type=1), **TOL)
        torch.testing.assert_close(torch_dct.idct1(torch_dct.dct1(t)), t, **TOL)
    with pytest.raises(ValueError, match="DCT-I is undefined for N < 2"):
        torch_dct.dct1(torch.randn(3, 1))


@pytest.mark.parametrize("fn,shape", [
    (lambda x: torch_dct.dct(x), (2, 5)), (lambda x: torch_dct.idct(x), (2, 5)),
    (lambda x: torch_dct.dct(x, "ortho"), (2, 4)), (lambda x: torch_dct.idct(x, "ortho"), (2, 4)),
    (lambda x: torch_dct.dct_2d(x), (2, 3)), (lambda x: torch_dct.idct_3d(x, "ortho"), (2, 2, 3)),
    (lambda x: torch_dct.dct1(x), (2, 5)), (lambda x: torch_dct.idct1(x), (2, 4)),
])
def test_gradients_reverse_double_and_forward(fn, shape):
    x = torch.randn(*shape, dtype=F64, requires_grad=True)
    assert gradcheck(fn, (x,), check_forward_ad=True, check_batched_grad=True)
    assert gradgradcheck(fn, (x,))


def test_vmap_and_low_precision():
    x = torch.randn(4, 3, 10, dtype=F64)
    torch.testing.assert_close(torch.func.vmap(torch_dct.dct_2d)(x), torch_dct.dct_2d(x))
    for dtype in (torch.float16, torch.bfloat16):
        xl = torch.randn(3, 16).to(dtype)
        for fn in (torch_dct.dct, torch_dct.idct, torch_dct.dct1):
            y = fn(xl)
            assert y.dtype == dtype
            ref = fn(xl.float())
            torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


@pytest.mark.parametrize("kind,norm", [("dct", None), ("dct", "ortho"), ("idct", None), ("idct", "ortho"),
                                       ("dct1", None), ("idct1", None)])
def test_linear_dct_matches_the_functions(kind, norm):
    layer = torch_dct.LinearDCT(9, kind, norm=norm, dtype=F64)
    assert not layer.weight.requires_grad and layer.bias is None
    assert f"type={kind!r}" in repr(layer)
    x = torch.randn(4, 5, 9, 9, 9, dtype=F64)
    fn = {"dct": torch_dct.dct, "idct": torch_dct.idct}.get(kind)
    one_d = (lambda v: fn(v, norm)) if fn else getattr(torch_dct, kind)
    torch.testing.assert_close(layer(x), one_d(x), **TOL)
    if fn is not None:
        nd = {"dct": (torch_dct.dct_2d, torch_dct.dct_3d), "idct": (torch_dct.idct_2d, torch_dct.idct_3d)}[kind]
        torch.testing.assert_close(torch_dct.apply_linear_2d(x, layer), nd[0](x, norm), **TOL)
        torch.testing.assert_close(torch_dct.apply_linear_3d(x, layer), nd[1](x, norm), **TOL)


def test_linear_dct_bias_starts_at_zero_and_trains():
    layer = torch_dct.LinearDCT(6, "dct", bias=True)
    assert torch.equal(layer.bias, torch.zeros(6)) and layer.bias.requires_grad
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["bias"]


@pytest.mark.parametrize("bad,err,match", [
    (lambda: torch_dct.dct(torch.randn(4), norm="forward"), ValueError, "unknown norm 'forward'"),
    (lambda: torch_dct.idct_2d(torch.randn(4), norm=None), ValueError, "at least 2 dimensions, got \\(4,\\)"),
    (lambda: torch_dct.dct_3d(torch.randn(3, 4)), ValueError, "at least 3 dimensions"),
    (lambda: torch_dct.dct(torch.ones(4, dtype=torch.long)), TypeError, "real floating-point"),
    (lambda: torch_dct.idct(torch.randn(3, 0)), ValueError, "last dimension >= 1"),
    (lambda: torch_dct.LinearDCT(4, "dst"), ValueError, "unknown type 'dst'"),
])
def test_clear_errors(bad, err, match):
    with pytest.raises(err, match=match):
        bad()
