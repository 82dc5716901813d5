"""The native build cache under injected faults: damaged libraries are rebuilt, never loaded; a failing
compiler falls back and is retried; concurrent first use builds once; the cache key ignores venv paths."""
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torch_acdc import native
from torch_acdc.native import builder


def _fake_compile(payload: bytes = b"\x7fELF fake library", seconds: float = 0.0, log: Path | None = None):
    """A stand-in for the compiler: writes ``payload`` as the library and its sidecar, like a real build."""
    def compile_(target: Path) -> None:
        if log is not None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        target.write_bytes(payload)
        builder.atomic_write(builder._sidecar(target), json.dumps({"size": len(payload),
                                                                   "sha256": builder._digest(target)}).encode())
    return compile_


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_ACDC_BUILD_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "garbage", "no-sidecar", "bad-sidecar"])
def test_damaged_library_is_rebuilt_not_loaded(build_dir, monkeypatch, damage):
    monkeypatch.setattr(builder, "_compile", _fake_compile())
    path, seconds = builder.ensure_built(announce=lambda m: None)
    assert seconds is not None and builder.verify(path) is None
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "zero-byte":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif damage == "no-sidecar":
        builder._sidecar(path).unlink()
    else:
        builder._sidecar(path).write_text("{not json")
    assert builder.verify(path) is not None  # the damage is seen before anything is loaded
    rebuilt, seconds = builder.ensure_built(announce=lambda m: None)
    assert rebuilt == path and seconds is not None and path.read_bytes() == good and builder.verify(path) is None


def test_a_truncated_cached_library_does_not_crash_a_new_process(tmp_path):
    """The real library, truncated inside a copy of the cache (its sidecar kept): a fresh process rebuilds it and
    computes correctly, instead of dying with a bus error on every start."""
    if not native.available():
        pytest.skip("native kernels could not be built")
    real = native._state["path"]
    cache = tmp_path / "cache"
    cache.mkdir()
    copy = cache / real.name
    shutil.copy(real, copy)
    shutil.copy(builder._sidecar(real), builder._sidecar(copy))
    copy.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    code = ("import torch; from torch_acdc import native, acdc, acdc_reference; assert native.available(); "
            "x, a, d = torch.randn(3, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64), "
            "torch.randn(8, dtype=torch.float64); "
            "assert torch.allclose(acdc(x, a, d), acdc_reference(x, a, d)); print(native.build_seconds())")
    env = {**os.environ, "TORCH_ACDC_BUILD_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip()) > 0  # it rebuilt
    assert builder.verify(copy) is None


def test_failing_compiler_raises_then_retry_succeeds(build_dir, monkeypatch):
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(builder.BuildError, match="false failed"):
        builder.ensure_built(announce=lambda m: None)
    assert not list(build_dir.glob("acdc_kernels-*.so"))  # nothing half-built is left to load
    monkeypatch.setenv("CXX", "definitely-not-a-compiler-xyz")
    with pytest.raises(builder.BuildError, match="cannot run"):
        builder.ensure_built(announce=lambda m: None)
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(builder, "_compile", _fake_compile())
    path, seconds = builder.ensure_built(announce=lambda m: None)  # a changed compiler: retried, and built
    assert seconds is not None and builder.verify(path) is None


def test_compiler_with_arguments_is_split_like_a_shell(monkeypatch):
    monkeypatch.setenv("CXX", "ccache g++")
    assert builder.compiler() == ["ccache", "g++"]
    monkeypatch.setenv("CXX", "")
    assert builder.compiler() == ["c++"]


def _first_use(build_dir: str, log: str) -> None:
    os.environ["TORCH_ACDC_BUILD_DIR"] = build_dir
    builder._compile = _fake_compile(seconds=1.0, log=Path(log))
    builder.ensure_built(announce=lambda m: None)


def test_concurrent_first_use_builds_once(build_dir):
    log = build_dir / "compiles.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_first_use, args=(str(build_dir), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1


def test_cache_key_ignores_virtual_environment_paths(monkeypatch):
    from torch.utils import cpp_extension

    before = builder.library_path()
    monkeypatch.setattr(cpp_extension, "include_paths", lambda *a, **k: ["/some/other/venv/include"])
    monkeypatch.setattr(cpp_extension, "library_paths", lambda *a, **k: ["/some/other/venv/lib"])
    assert builder.library_path() == before


@pytest.mark.parametrize("value,expected", [("0", False), ("false", False), ("OFF", False), ("no", False),
                                            ("1", True), ("true", True), ("on", True), ("", True)])
def test_native_switch_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("TORCH_ACDC_NATIVE", value)
    assert native._env_enabled() is expected


def test_unknown_native_switch_value_warns(monkeypatch):
    monkeypatch.setenv("TORCH_ACDC_NATIVE", "maybe")
    with pytest.warns(RuntimeWarning, match="TORCH_ACDC_NATIVE='maybe'"):
        assert native._env_enabled() is True
