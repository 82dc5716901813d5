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
    y = m(torch.randn(4, 16))
    assert type(y) is torch.Tensor
    assert type(dct(torch.randn(3, 16))) is torch.Tensor and type(idct(torch.randn(3, 16))) is torch.Tensor
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


# ---- finding 3: a fresh run never deletes another run's files, and refuses to start over it ----

def _old_run(folder):
    from torch_acdc.training import CheckpointManager, TrainState

    state = TrainState(CheckpointManager(folder / "checkpoints"), model=torch.nn.Linear(2, 2))
    for step in (100, 200):
        state.save(step, extra={"who": "old"})
    (folder / "results.json").write_text("{}")


def test_fresh_run_refuses_a_folder_holding_a_longer_run(tmp_path):
    from torch_acdc.experiments.common import make_run_dir
    from torch_acdc.training import CheckpointManager, RunFolderError, TrainState

    _old_run(tmp_path)
    with pytest.raises(RunFolderError, match=r"already holds a run \(results.json, checkpoints\).*--resume.*--overwrite"):
        make_run_dir(tmp_path, "classify", can_resume=True)
    assert make_run_dir(tmp_path, "classify", resume=True) == tmp_path
    state = TrainState(CheckpointManager(tmp_path / "checkpoints"), model=torch.nn.Linear(2, 2))
    with pytest.raises(RunFolderError, match="holds checkpoints of an earlier run.*ckpt-00000200.pt"):
        state.save(1)  # before the fix: written, then deleted at once (keep-newest-2 kept steps 100 and 200)
    with pytest.raises(RunFolderError, match="earlier run"):
        state.begin(resume=False)
    assert [s for s, _ in state.checkpoints.checkpoints()] == [100, 200]
    state.begin(resume=False, overwrite=True)  # explicit consent
    state.save(1)
    state.save(2)
    assert [s for s, _ in state.checkpoints.checkpoints()] == [1, 2]


def test_retention_never_deletes_checkpoints_the_run_did_not_write(tmp_path):
    from torch_acdc.training import CheckpointManager

    CheckpointManager(tmp_path).save(100, {"who": "other"})
    CheckpointManager(tmp_path).save(200, {"who": "other"})
    mine = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        mine.save(step, {"who": "me"})
    # before the fix ckpt-1, -2 and -3 were each deleted as soon as written
    assert [s for s, _ in mine.checkpoints()] == [2, 3, 100, 200]


# ---- finding 4: one writer per run folder ----

_HOLDER = """
import sys
from torch_acdc.experiments.common import make_run_dir
from torch_acdc.training import CheckpointManager
CheckpointManager(sys.argv[1]).save(1, {"who": "holder"})
make_run_dir(sys.argv[2], "x")  # the run-folder lock, as the commands take it
print("ready", flush=True)
sys.stdin.readline()
"""


def test_second_writer_of_a_folder_gets_an_error_naming_the_holder(tmp_path):
    import os
    import subprocess
    import sys

    from torch_acdc.experiments.common import make_run_dir
    from torch_acdc.training import CheckpointManager, RunLockError

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "ck"), str(tmp_path / "run")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunLockError, match=f"in use by another process \\(pid {holder.pid} on "):
            CheckpointManager(tmp_path / "ck").save(2, {"who": "intruder"})  # before the fix: both wrote
        assert [s for s, _ in CheckpointManager(tmp_path / "ck").checkpoints()] == [1]
        with pytest.raises(RunLockError, match=f"run folder .*run: is in use by another process \\(pid {holder.pid}"):
            make_run_dir(tmp_path / "run", "x")
    finally:
        holder.communicate("\n", timeout=60)
    CheckpointManager(tmp_path / "ck").save(2, {"who": "next"})  # the lock dies with its holder
    assert [s for s, _ in CheckpointManager(tmp_path / "ck").checkpoints()] == [1, 2]


# ---- finding 5: a checkpoint with a valid header but foreign content is unusable, not a crash ----

@pytest.mark.parametrize("foreign, reason", [
    ("a list", "expected a dict, got list"),
    ("no rng", r"missing key\(s\) \['rng'\]"),
    ("extra None", r"extra lacks \['history'\]"),
    ("rng junk", "rng must be a non-empty list"),
])
def test_foreign_checkpoint_content_falls_back_to_the_previous(tmp_path, foreign, reason):
    from torch_acdc.training import CheckpointManager, TrainState, atomic_save, load_checkpoint

    model = torch.nn.Linear(2, 2)
    state = TrainState(CheckpointManager(tmp_path), model=model)
    state.save(1, extra={"history": [0.5]})
    good = load_checkpoint(state.checkpoints.path_for(1))
    bad = {"no rng": {k: v for k, v in good.items() if k != "rng"}, "extra None": {**good, "extra": None},
           "rng junk": {**good, "rng": [1]}, "a list": [1, 2, 3]}[foreign]
    atomic_save(bad, state.checkpoints.path_for(2))
    with pytest.warns(UserWarning, match=f"ckpt-00000002.pt is unusable: unexpected content: {reason}"):
        r = TrainState(CheckpointManager(tmp_path), model=torch.nn.Linear(2, 2)).resume(require_extra=("history",))
    assert r.step == 1 and r.extra == {"history": [0.5]}


# ---- finding 6: no implicit dense `weight` on structured layers; the matrix only via to_dense() ----

def test_structured_layers_have_no_implicit_dense_weight():
    from torch import nn

    from torch_acdc.conv import ACDCSeparableConv2d

    nonlinear = StackedACDC(4, 4, 2, activation="relu")
    assert not hasattr(nonlinear, "weight")  # before the fix: RuntimeError from to_dense() inside hasattr
    model = nn.Sequential(nn.Linear(4, 4), StackedACDC(4, 4, 2), ACDC(4), AFDF(4), ACDCConv2d(4, 4),
                          ACDCSeparableConv2d(4, 4, 3), nonlinear)
    touched = []
    for m in model.modules():  # the common init loop
        if hasattr(m, "weight") and isinstance(getattr(m, "weight"), nn.Parameter):
            touched.append(type(m).__name__)
    assert touched == ["Linear", "Conv2d"]
    for m in (StackedACDC(4, 4, 2), ACDC(4), ACDCConv2d(4, 4)):
        assert not hasattr(m, "weight") and m.to_dense().dim() in (2, 4)


# ---- finding 10: a `perms` buffer that is not a permutation is refused on load ----

@pytest.mark.parametrize("corrupt, message", [
    (lambda p: torch.zeros_like(p), r"row 0 is not a permutation of range\(6\) \(repeated entries\)"),
    (lambda p: p + 3, r"row 0 is not a permutation of range\(6\) \(entries out of range \[0, 6\)"),
    (lambda p: p[:, :4], r"expected shape \(2, 6\), got \(2, 4\)"),
    (lambda p: p.double(), "expected an integer"),
])
def test_invalid_perms_buffer_is_refused_on_load(corrupt, message):
    for cls in (StackedACDC, StackedAFDF):
        src, dst = cls(6, 6, 3), cls(6, 6, 3)
        before = dst.perms.clone()
        sd = src.state_dict()
        sd["perms"] = corrupt(sd["perms"])
        with pytest.raises(RuntimeError, match=message):  # before the fix: loaded silently
            dst.load_state_dict(sd)
        assert torch.equal(dst.perms, before)
    dst.load_state_dict(src.state_dict())  # a valid one still loads
    assert torch.equal(dst.perms, src.perms)


# ---- finding 7: fit_dense on float16 / bfloat16 ----

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fit_dense_low_precision_weight_gives_a_finite_fit(dtype):
    from torch_acdc.conversion import convert
    from torch_acdc.fit import fit_dense

    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    low = fit_dense(w.to(dtype), 2, steps=30, lr=1e-2, seed=0)  # before the fix: error nan after step 1
    ref = fit_dense(w, 2, steps=30, lr=1e-2, seed=0)
    assert low.module.a.dtype == dtype and all(torch.isfinite(torch.tensor(low.history)))
    assert low.error < low.history[0] and abs(low.error - ref.error) < 0.05
    model = torch.nn.Sequential(torch.nn.Linear(8, 8)).to(dtype)
    _, report = convert(model, min_features=1, fit=True, fit_steps=5, fit_optimizer="adam", fit_lr=1e-2, seed=0)
    assert report.replaced and all(r.fit_error is not None and r.fit_error == r.fit_error for r in report.replaced)


def test_fit_dense_refuses_a_non_finite_weight():
    from torch_acdc.fit import fit_dense

    with pytest.raises(ValueError, match="finite weight"):
        fit_dense(torch.full((4, 4), float("nan")), 2, steps=1, lr=1e-2)


# ---- finding 9: MNIST IDX problems are errors naming the file ----

def _mnist(folder, train_images=None, train_labels=None, test_images=None, gz=False):
    import numpy as np

    from torch_acdc.experiments.digits_data import MNIST_FILES, write_idx

    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train_images": train_images if train_images is not None else rng.integers(0, 255, (6, 4, 4), dtype=np.uint8),
              "train_labels": train_labels if train_labels is not None else np.arange(6, dtype=np.uint8),
              "test_images": test_images if test_images is not None else rng.integers(0, 255, (3, 4, 4), dtype=np.uint8),
              "test_labels": np.arange(3, dtype=np.uint8)}
    for key, stem in MNIST_FILES.items():
        write_idx(folder / (stem + (".gz" if gz and key == "train_images" else "")), arrays[key])
    return folder


def test_mnist_idx_problems_name_the_file(tmp_path):
    import numpy as np

    from torch_acdc.experiments.digits_data import load_mnist

    assert load_mnist(_mnist(tmp_path / "ok")).in_features == 16
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels must be digits 0..9, got values in \[0, 12\]"):
        load_mnist(_mnist(tmp_path / "labels", train_labels=np.array([0, 1, 2, 3, 4, 12], dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"train images are \(4, 4\) pixels but test images \(5, 5\)"):
        load_mnist(_mnist(tmp_path / "sizes", test_images=np.zeros((3, 5, 5), dtype=np.uint8)))
    nan = np.zeros((6, 4, 4), dtype=np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: images contain NaN"):
        load_mnist(_mnist(tmp_path / "nan", train_images=nan))
    bad_gz = _mnist(tmp_path / "gz", gz=True) / "train-images-idx3-ubyte.gz"
    bad_gz.write_bytes(bad_gz.read_bytes()[:-12])  # truncated gzip stream
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot be read \(EOFError"):
        load_mnist(bad_gz.parent)
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot be read \(BadGzipFile"):
        load_mnist(bad_gz.parent)


# ---- regressions of the hostile-user findings (issue 20) ----

def test_new_permutations_are_used_at_once_not_stale_cached_gathers():
    """Assigning a fresh perms tensor (which may reuse the freed tensor's address and version) must change the
    output at once: 100 trials against the stack written out by hand (31 of 100 returned the old result)."""
    from operator_checks import stack_by_hand
    from torch_acdc import StackedACDC, acdc_reference

    torch.manual_seed(0)
    stack = StackedACDC(12, 12, depth=3, dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    for _ in range(100):
        with torch.no_grad():
            stack(x)  # fills the gather cache
            stack.perms = torch.stack([torch.randperm(12) for _ in range(2)])
            expected = stack_by_hand(stack, x, acdc_reference, activation=lambda h: h)
            torch.testing.assert_close(stack(x), expected.to(x.dtype), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_native", [True, False])
def test_in_place_edit_that_breaks_a_permutation_raises(use_native):
    from torch_acdc import StackedACDC, native

    stack = StackedACDC(8, 8, depth=3)
    x = torch.randn(2, 8)
    with native.use_native(use_native):
        stack(x)
        with torch.no_grad():
            stack.perms[1, 0] = stack.perms[1, 1]
        with pytest.raises(ValueError, match="perms: row 1 is not a permutation"):
            stack(x)


def test_native_op_rejects_a_gather_index_that_is_not_a_permutation():
    from torch_acdc import native
    from torch_acdc.transform import makhoul_tables

    if not native.available():
        pytest.skip("native kernels could not be built")
    t = makhoul_tables(6, torch.float32, "cpu")
    x, a = torch.randn(2, 6), torch.randn(6)
    for bad in (torch.tensor([0, 1, 2, 3, 4, 4]), torch.tensor([0, 1, 2, 3, 4, 9]), torch.arange(5)):
        with pytest.raises(RuntimeError, match="gather index"):
            native.ops().acdc_forward(x, a, a, None, None, bad, None, t.twiddle_pairs, False)


@pytest.mark.parametrize("make", ["ACDC", "StackedACDC", "AFDF"])
def test_parameters_on_the_meta_device_raise_instead_of_acting_as_one(make):
    import torch_acdc

    layer = getattr(torch_acdc, make)(*((8,) if make != "StackedACDC" else (8, 8, 2)), device="meta")
    with pytest.raises(ValueError, match="meta"):
        layer(torch.randn(3, 8))


def test_integer_sizes_of_any_index_type_are_accepted():
    import numpy as np

    from torch_acdc import ACDC, StackedACDC

    assert ACDC(np.int64(16)).in_features == 16
    assert StackedACDC(np.int32(8), np.int64(4), np.int16(2)).features == 8
    for bad in (16.0, True, "16", 0):
        with pytest.raises(ValueError, match="positive integer"):
            ACDC(bad)


def test_native_fp32_parameter_gradients_sum_the_batch_accurately():
    """Blocked batch sums: at large batch the fp32 native parameter gradients stay within a few 1e-7 (relative)
    of a float64 computation (a sequential sum over 65536 rows drifted to 1e-6 .. 2e-5)."""
    from torch_acdc import ACDC, native

    if not native.available():
        pytest.skip("native kernels could not be built")
    torch.manual_seed(0)
    layer = ACDC(64)
    x = torch.randn(65536, 64) + 3.0  # a large common offset makes sequential rounding visible
    layer(x).sum().backward()
    ref = ACDC(64, dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    ref(x.double()).sum().backward()
    for p, r in zip(layer.parameters(), ref.parameters()):
        rel = ((p.grad.double() - r.grad).norm() / r.grad.norm()).item()
        assert rel < 1e-6, (rel, p.shape)


def test_an_empty_checkpoints_folder_does_not_block_a_rerun(tmp_path):
    from torch_acdc.training.runs import check_fresh_start, holds_run

    (tmp_path / "checkpoints").mkdir()
    assert holds_run(tmp_path) == []
    check_fresh_start(tmp_path, resume=False, overwrite=False)


def test_refusal_advice_names_only_the_flags_the_command_has(tmp_path):
    from torch_acdc.experiments.common import make_run_dir
    from torch_acdc.training import RunFolderError

    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunFolderError) as no_resume:
        make_run_dir(tmp_path, "cost")
    assert "--resume" not in str(no_resume.value) and "--overwrite" in str(no_resume.value)
    with pytest.raises(RunFolderError, match="--resume"):
        make_run_dir(tmp_path, "classify", can_resume=True)


def test_resume_skips_a_readable_foreign_newest_checkpoint_without_touching_it(tmp_path):
    from torch import nn

    from torch_acdc.training import CheckpointManager, TrainState

    import shutil

    TrainState(CheckpointManager(tmp_path), model=nn.Linear(2, 2)).save(1)
    other = CheckpointManager(tmp_path / "other")
    TrainState(other, model=nn.Linear(3, 2)).save(2)  # valid, another run's model
    foreign = CheckpointManager(tmp_path)
    shutil.copy(other.path_for(2), foreign.path_for(2))  # the newest file in this folder
    before = foreign.path_for(2).read_bytes()
    with pytest.warns(UserWarning, match="does not fit"):
        resumed = TrainState(CheckpointManager(tmp_path), model=nn.Linear(2, 2)).resume()
    assert resumed.step == 1
    assert foreign.path_for(2).read_bytes() == before  # kept as it was, not renamed


def test_a_forked_child_does_not_inherit_the_parents_folder_lock(tmp_path):
    import multiprocessing

    from torch_acdc.training.runs import RunLockError, lock_dir

    lock_dir(tmp_path)

    def child(q):
        try:
            lock_dir(tmp_path)
            q.put("locked")
        except RunLockError:
            q.put("refused")

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == "refused"


def test_results_and_checkpoints_follow_the_umask(tmp_path):
    import os
    import stat

    from torch_acdc.experiments.common import write_json
    from torch_acdc.training import atomic_save

    old = os.umask(0o022)
    try:
        for path in (write_json(tmp_path / "r.json", {"a": 1}), atomic_save({"a": 1}, tmp_path / "c.pt")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    """A real file-size limit (RLIMIT_FSIZE) in a child process: the write fails with an error naming the
    file, the previous version is intact and no temporary is left."""
    import subprocess
    import sys

    target = tmp_path / "results.json"
    target.write_text('{"old": true}')
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from torch_acdc.experiments.common import write_json
try:
    write_json({str(target)!r}, {{"big": "x" * 100000}})
except OSError as e:
    print(e.filename)
    sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-1500:]
    assert done.stdout.strip() == str(target)
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
