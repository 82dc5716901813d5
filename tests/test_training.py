"""torch_acdc.training: atomic checksummed checkpoints, RNG capture, deterministic sharded batches, TrainState."""
import os
import random

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

from torch_acdc.training import (CheckpointError, CheckpointManager, DistContext, ShardedBatches, StreamBatches,
                                 TrainState, atomic_save, capture_rng_state, distributed, load_checkpoint,
                                 restore_rng_state)


def _nested_state():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "step": 7, "name": "x", "none": None,
            "lists": [1.5, torch.arange(5)], "nested": {"t": torch.ones(2, dtype=torch.float64)}}


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.dtype == b.dtype
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


# ------------------------------------------------------------------------------------------ checkpoints
def test_atomic_save_roundtrip_is_exact(tmp_path):
    state = _nested_state()
    path = atomic_save(state, tmp_path / "c.pt")
    _assert_same(load_checkpoint(path), state)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], "checksum"),
    (lambda b: b"PK\x03\x04" + b[4:], "not a torch-acdc checkpoint"),
    (lambda b: b"", "not a torch-acdc checkpoint"),
])
def test_damaged_checkpoint_raises_naming_the_file(tmp_path, damage, reason):
    path = atomic_save(_nested_state(), tmp_path / "c.pt")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = atomic_save({"v": torch.tensor(1)}, tmp_path / "c.pt")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_manager_keeps_newest_and_ignores_temp_files(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck", keep=2)
    assert mgr.checkpoints() == [] and mgr.load_latest() is None
    for step in (5, 10, 15):
        mgr.save(step, {"step": step})
    assert [s for s, _ in mgr.checkpoints()] == [10, 15]
    stale = mgr.directory / ".ckpt-00000020.pt.abc123.tmp"  # as left by a writer killed mid-write
    stale.write_bytes(b"partial")
    latest = mgr.load_latest()
    assert latest.step == 15 and latest.state == {"step": 15} and latest.path == mgr.path_for(15)
    mgr.save(20, {"step": 20})
    assert not stale.exists() and [s for s, _ in mgr.checkpoints()] == [15, 20]


@pytest.mark.parametrize("quarantine", [False, True])
def test_corrupt_newest_falls_back_to_previous_good(tmp_path, quarantine):
    mgr = CheckpointManager(tmp_path, keep=2)
    mgr.save(1, {"step": 1})
    newest = mgr.save(2, {"step": 2})
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.warns(UserWarning, match=f"{newest.name}.*truncated.*falling back"):
        latest = mgr.load_latest(quarantine=quarantine)
    assert latest.step == 1 and latest.state == {"step": 1}
    assert mgr.path_for(1).exists()
    assert newest.exists() != quarantine
    assert newest.with_name(newest.name + ".corrupt").exists() == quarantine


def test_no_readable_checkpoint_is_an_error_listing_all(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2):
        mgr.save(step, {"step": step}).write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="ckpt-00000002.pt.*ckpt-00000001.pt"):
        mgr.load_latest()


def test_manager_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)
    with pytest.raises(ValueError, match="prefix"):
        CheckpointManager(tmp_path, prefix="a/b")
    with pytest.raises(ValueError, match="step"):
        CheckpointManager(tmp_path).save(-1, {})


# ------------------------------------------------------------------------------------------------- RNG
def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1)


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()   # and in numpy's
    state = capture_rng_state()
    expected = _draws()
    path = atomic_save(state, tmp_path / "rng.pt")
    _draws()
    restore_rng_state(load_checkpoint(path))  # weights_only load: the state holds no arbitrary objects
    assert _draws() == expected


# --------------------------------------------------------------------------------------------- batches
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sharded_batches_partition_the_global_batch(world_size):
    ref = ShardedBatches(50, 8, seed=3)
    shards = [ShardedBatches(50, 8, seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    for step in range(20):
        glob = ref.global_indices(step)
        assert torch.equal(torch.cat([s.indices(step) for s in shards]), glob)
        assert torch.equal(shards[-1].global_indices(step), glob)


def test_sharded_batches_epochs_are_seeded_permutations():
    b = ShardedBatches(50, 8, seed=3)
    assert b.steps_per_epoch == 6  # 50 // 8: the incomplete batch is dropped
    epoch0 = torch.cat([b.global_indices(s) for s in range(6)])
    epoch1 = torch.cat([b.global_indices(s) for s in range(6, 12)])
    assert len(set(epoch0.tolist())) == 48 and len(set(epoch1.tolist())) == 48
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(ShardedBatches(50, 8, seed=3).global_indices(7), b.global_indices(7))
    assert not torch.equal(ShardedBatches(50, 8, seed=4).global_indices(7), b.global_indices(7))
    assert torch.equal(ShardedBatches(50, 8, seed=3, shuffle=False).global_indices(1), torch.arange(8, 16))


def test_batch_argument_errors():
    with pytest.raises(ValueError, match="divisible|multiple"):
        ShardedBatches(50, 6, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        ShardedBatches(50, 8, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="full batch"):
        ShardedBatches(5, 8, seed=0)
    with pytest.raises(ValueError, match="too short"):
        StreamBatches(torch.arange(20), streams=4, bptt=8)
    with pytest.raises(ValueError, match="1-D LongTensor"):
        StreamBatches(torch.rand(100), streams=2, bptt=4)


@given(n=st.integers(40, 400), streams=st.sampled_from([1, 2, 4, 6]), bptt=st.integers(1, 9),
       seed=st.integers(0, 5))
def test_stream_batches_read_consecutive_text_within_bounds(n, streams, bptt, seed):
    tokens = torch.arange(n)  # token value == position, so every read is checkable
    try:
        b = StreamBatches(tokens, streams, bptt, seed)
    except ValueError:
        assert n < streams * bptt + bptt
        return
    for step in range(3 * b.chunks_per_epoch):
        chunk = b.batch(step)
        offsets = b.offsets(step)
        assert chunk.first == (step % b.chunks_per_epoch == 0)
        assert torch.equal(chunk.inputs, offsets[:, None] + torch.arange(bptt))
        assert torch.equal(chunk.targets, chunk.inputs + 1)
        assert int(chunk.targets.max()) < n
        if not chunk.first:  # each stream continues exactly where it stopped
            assert torch.equal(offsets, b.offsets(step - 1) + bptt)
        assert torch.equal(torch.diff(offsets), torch.full((streams - 1,), b.length))  # disjoint streams


def test_stream_batches_shards_and_epoch_shift():
    tokens = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    full = StreamBatches(tokens, 4, 10, seed=1)
    halves = [StreamBatches(tokens, 4, 10, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in (0, 5, full.chunks_per_epoch + 3):
        assert torch.equal(torch.cat([h.batch(step).inputs for h in halves]), full.batch(step).inputs)
    shifts = {int(full.offsets(e * full.chunks_per_epoch)[0]) for e in range(8)}
    assert len(shifts) > 1 and all(0 <= s < 10 for s in shifts)  # boundaries move between epochs
    assert int(StreamBatches(tokens, 4, 10, seed=1, shuffle=False).offsets(full.chunks_per_epoch)[0]) == 0


# ------------------------------------------------------------------------------------------ distributed
def test_single_process_context_collectives_are_identity(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with distributed("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed, ctx.backend) == (0, 1, True, False, None)
        model = nn.Linear(2, 2)
        assert ctx.wrap(model) is model
        t = torch.arange(4.0)
        assert torch.equal(ctx.all_reduce_sum(t), t) and torch.equal(ctx.all_gather_cat(t), t)
        assert ctx.all_gather_object("x") == ["x"] and ctx.broadcast_object(3) == 3
        assert ctx.split(8) == slice(0, 8)


def test_context_split_and_env_errors(monkeypatch):
    assert DistContext(rank=1, world_size=4).split(8) == slice(2, 4)
    with pytest.raises(ValueError, match="divisible"):
        DistContext(rank=0, world_size=3).split(8, "batch")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK"):
        with distributed("cpu"):
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        with distributed("cpu"):
            pass


# ------------------------------------------------------------------------------------------- TrainState
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)


def _train(model, opt, batches, x, y, steps):
    for step in steps:
        idx = batches.indices(step)
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_train_state_resume_is_bitwise_identical(tmp_path):
    """Save after 5 steps, continue to 12; a fresh process-like restart from the checkpoint gets the same bits
    (dropout draws from the restored RNG, Adam's moments from the restored optimizer, batches from the step)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)
    batches = ShardedBatches(64, 8, seed=0)

    def fresh(seed):
        torch.manual_seed(seed)
        model = _Net()
        return model, torch.optim.Adam(model.parameters(), lr=1e-2)

    model, opt = fresh(0)
    state = TrainState(CheckpointManager(tmp_path), model=model, optimizer=opt)
    _train(model, opt, batches, x, y, range(5))
    state.save(5, data={"note": "after 5"}, extra={"history": [1.0]})
    _train(model, opt, batches, x, y, range(5, 12))

    model2, opt2 = fresh(123)  # different init and RNG: everything must come from the checkpoint
    resumed = TrainState(CheckpointManager(tmp_path), model=model2, optimizer=opt2).resume()
    assert (resumed.step, resumed.data, resumed.extra) == (5, {"note": "after 5"}, {"history": [1.0]})
    _train(model2, opt2, batches, x, y, range(5, 12))
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_train_state_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        TrainState(CheckpointManager(tmp_path))
    with pytest.raises(TypeError, match="state_dict"):
        TrainState(CheckpointManager(tmp_path), model=object())
    assert TrainState(CheckpointManager(tmp_path), model=nn.Linear(2, 2)).resume() is None
    TrainState(CheckpointManager(tmp_path), model=nn.Linear(2, 2)).save(1)
    with pytest.raises(CheckpointError, match="does not fit this run's model"):
        TrainState(CheckpointManager(tmp_path), model=nn.Linear(3, 2)).resume()
    with pytest.raises(CheckpointError, match="has no 'optimizer' state"):
        model = nn.Linear(2, 2)
        TrainState(CheckpointManager(tmp_path), model=model, optimizer=torch.optim.SGD(model.parameters())).resume()
    mgr = CheckpointManager(tmp_path)
    mgr.path_for(1).write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no readable checkpoint"):
        TrainState(mgr, model=nn.Linear(2, 2)).resume()
