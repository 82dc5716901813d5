"""Regression tests for issue 12 (fault-injection pass): caches, run folders, checkpoints, unsafe APIs.

Each test fails on the code before its fix (checked by running this file against the stashed sources);
sizes are unusual so that a table is first built inside the test even where the cache cannot be cleared.
"""
from __future__ import annotations

import pytest
import torch

from torch_acdc import dct_compat, tables
from torch_acdc.afdf import AFDF, StackedAFDF
from torch_acdc.conv import ACDCConv2d
from torch_acdc.layers import ACDC, StackedACDC
from torch_acdc.transform import dct, idct


@pytest.fixture
def fresh_tables():
    tables.clear()
    yield
    tables.clear()


# ---- finding 1: a first call under inference_mode must not poison the tables ----

@pytest.mark.parametrize("make, n", [
    (lambda n: StackedACDC(n, 7, 3), 13), (lambda n: ACDC(n), 19), (lambda n: StackedAFDF(n, n, 2), 23),
    (lambda n: ACDCConv2d(n, 5), 29), (lambda n: (lambda x: dct_compat.dct(x)), 31),
])
def test_inference_mode_first_call_keeps_tables_trainable(fresh_tables, make, n):
    m = make(n)
    x = torch.randn(2, n) if not isinstance(m, ACDCConv2d) else torch.randn(2, n, 2, 2)
    with torch.inference_mode():
        m(x)
    xg = x.clone().requires_grad_()
    make(n)(xg).sum().backward()  # before the fix: "Inference tensors cannot be saved for backward"
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


# ---- finding 2: fake tensors (export), meta/device modes, vmap: tables are plain; the cache is bounded ----

def _cached_tensors():
    for value, _ in tables._entries.values():
        yield from tables._tensors(value)


def test_export_before_eager_call_caches_no_fake_tensors(fresh_tables):
    m = AFDF(16)
    torch.export.export(m, (torch.randn(2, 16),))
    torch.export.export(torch.nn.Sequential(StackedACDC(17, 17, 2)), (torch.randn(2, 17),))
    y = m(torch.randn(4, 16))
    assert type(y) is torch.Tensor
    assert type(dct(torch.randn(3, 17))) is torch.Tensor and type(idct(torch.randn(3, 16))) is torch.Tensor
    assert type(dct_compat.dct(torch.randn(3, 16))) is torch.Tensor


def test_fake_mode_first_call_caches_plain_tensors(fresh_tables):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        assert type(dct(torch.randn(2, 43))) is not torch.Tensor
        AFDF(43)(torch.randn(2, 43))
    assert type(dct(torch.randn(2, 43))) is torch.Tensor
    assert type(AFDF(43)(torch.randn(2, 43))) is torch.Tensor
    assert all(type(t) is torch.Tensor for t in _cached_tensors())


def test_device_context_and_vmap_first_call_cache_plain_cpu_tensors(fresh_tables):
    with torch.device("meta"):
        dct(torch.randn(2, 47, device="cpu"))  # the tables for cpu must be cpu tensors, not meta
    torch.func.vmap(lambda r: idct(r))(torch.randn(3, 53))
    torch.func.grad(lambda r: dct(r).sum())(torch.randn(59))
    x = torch.randn(2, 47)
    torch.testing.assert_close(idct(dct(x)), x)
    for t in _cached_tensors():
        assert type(t) is torch.Tensor and t.device.type == "cpu" and not t.is_inference() and not t.requires_grad


def test_table_cache_is_bounded_in_bytes(fresh_tables):
    limit = tables.cache_limit()
    try:
        tables.set_cache_limit(200_000)
        for n in range(600, 1400, 50):
            dct(torch.randn(1, n, dtype=torch.float64))
            info = tables.cache_info()
            assert info["bytes"] <= 200_000 or info["entries"] == 1
        assert tables.cache_info()["entries"] < 16
        tables.set_cache_limit(0)
        assert tables.cache_info()["entries"] == 1
        with pytest.raises(ValueError, match="non-negative integer, got -1"):
            tables.set_cache_limit(-1)
    finally:
        tables.set_cache_limit(limit)
