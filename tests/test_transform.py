"""dct/idct against scipy's orthonormal DCT-II/III, dense reference, gradients and dtype handling."""
import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, strategies as st
from torch.autograd import gradcheck, gradgradcheck

from torch_acdc import dct, dct_matrix, idct
from torch_acdc.transform import makhoul_tables

LENGTHS = [1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 97, 128, 257, 1000, 1024, 4099, 65536]


def _rel_err(got: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(got.double().numpy() - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("n", LENGTHS)
def test_matches_scipy_fp64_and_fp32(n):
    rows = 2 if n > 5000 else 5
    x = torch.randn(rows, n, dtype=torch.float64)
    ref = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1)
    iref = scipy.fft.idct(x.numpy(), type=2, norm="ortho", axis=-1)
    assert _rel_err(dct(x), ref) <= 1e-12
    assert _rel_err(idct(x), iref) <= 1e-12
    assert _rel_err(dct(x.float()), ref) <= 1e-5
    assert _rel_err(idct(x.float()), iref) <= 1e-5


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3), n=st.integers(1, 70))
def test_any_leading_shape_and_roundtrip(shape, n):
    x = torch.randn(*shape, n, dtype=torch.float64)
    ref = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1)
    assert _rel_err(dct(x), ref) <= 1e-12
    torch.testing.assert_close(idct(dct(x)), x, rtol=0, atol=1e-12)
    assert dct(x).shape == x.shape


@pytest.mark.parametrize("n", [1, 2, 6, 9])
def test_dense_reference_agrees(n):
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(dct(x), x @ dct_matrix(n).T, rtol=0, atol=1e-12)
    torch.testing.assert_close(dct_matrix(n) @ dct_matrix(n).T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_gradients_are_the_adjoint(n):
    x = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
    for fn in (dct, idct):
        assert gradcheck(fn, (x,), check_forward_ad=True, check_batched_grad=True)
        assert gradgradcheck(fn, (x,))
    g = torch.randn(2, n, dtype=torch.float64)
    (gx,) = torch.autograd.grad(dct(x), x, g)
    torch.testing.assert_close(gx, idct(g), rtol=0, atol=1e-12)
    (gx,) = torch.autograd.grad(idct(x), x, g)
    torch.testing.assert_close(gx, dct(g), rtol=0, atol=1e-12)


def test_vmap_and_jvp():
    x = torch.randn(4, 3, 10, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(dct)(x), dct(x))
    t = torch.randn_like(x)
    out, tangent = torch.func.jvp(idct, (x,), (t,))
    torch.testing.assert_close(tangent, idct(t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_computed_in_fp32(dtype):
    x = torch.randn(4, 33)
    y = dct(x.to(dtype))
    assert y.dtype == dtype
    ref = scipy.fft.dct(x.to(dtype).double().numpy(), norm="ortho")
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    assert _rel_err(y, ref) <= tol


@pytest.mark.parametrize("bad", [torch.arange(4), torch.ones(4, dtype=torch.bool), torch.randn(4, dtype=torch.complex64)])
def test_rejects_non_real_float(bad):
    with pytest.raises(TypeError, match="real floating-point"):
        dct(bad)


def test_empty_batch_and_errors():
    assert dct(torch.randn(0, 8)).shape == (0, 8)
    with pytest.raises(ValueError, match="last dimension >= 1"):
        dct(torch.randn(3, 0))
    with pytest.raises(ValueError, match="0-d"):
        idct(torch.tensor(1.0))


def test_tables_are_cached_per_length_dtype_device():
    a = makhoul_tables(12, torch.float32, torch.device("cpu"))
    assert makhoul_tables(12, torch.float32, torch.device("cpu")) is a
    assert makhoul_tables(12, torch.float64, torch.device("cpu")) is not a
