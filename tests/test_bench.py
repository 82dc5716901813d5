"""The benchmark library: interleaved timing returns one time per call and round, the batch sweep reports
median- and min-based speedups consistent with its own times, and the Monarch peer is a correct linear map."""
import math

import torch

from torch_acdc import bench


def test_interleaved_times_has_one_entry_per_repeat_and_medians_agree():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    times = bench.interleaved_times({"a": make("a"), "b": make("b")}, repeats=5, warmup=2)
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5} and calls == {"a": 7, "b": 7}
    assert all(t >= 0 for v in times.values() for t in v)
    assert set(bench.interleaved_ms({"a": make("a")}, repeats=3)) == {"a"}


def test_batch_sweep_rows_are_self_consistent():
    rows = bench.batch_sweep(sizes=(32,), batches=(1, 4), repeats=3, progress=False)
    assert [(r["n"], r["batch"]) for r in rows] == [(32, 1), (32, 4)]
    for r in rows:
        assert math.isclose(r["fb_speedup"], r["linear_fb_ms"] / r["acdc_fb_ms"])
        assert r["fb_speedup_min"] > 0 and r["fwd_speedup_min"] > 0
    table = bench.format_sweep(rows)
    assert table.count("\n") == 3 and "median / min" in table


def test_monarch_peer_is_linear_with_the_right_shape():
    torch.manual_seed(0)
    n = 64
    layer = bench.Monarch(n).double()
    x, y = torch.randn(3, n, dtype=torch.float64), torch.randn(3, n, dtype=torch.float64)
    out = layer(x + 2 * y)
    assert out.shape == (3, n)
    zero = layer(torch.zeros(1, n, dtype=torch.float64))
    torch.testing.assert_close(out, layer(x) + 2 * layer(y) - 2 * zero, rtol=1e-10, atol=1e-10)
