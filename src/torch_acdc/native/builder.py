"""Building and loading the native CPU library (``csrc/<device>/*.cpp``), with a cache that cannot crash.

The sources are compiled with the system C++ compiler (``$CXX``, default ``c++``; it may carry arguments, e.g.
``CXX="ccache g++"``), one process per file in parallel, then linked into one shared library (only ATen
headers: no ninja, no pybind11), for the machine's own instruction set (``-march=native``, retried without it
if the compiler refuses). The library lives in ``$TORCH_ACDC_BUILD_DIR`` (default ``~/.cache/torch_acdc``)
under a name keyed by the sources, the torch version, the compiler's identity, the flags and the CPU's
features; two virtual environments with the same torch share one build.

The cache is validated before anything is loaded: a build is finished by writing a sidecar
``<library>.json`` (size and SHA-256 of the library, written atomically after the library itself). A library
without a sidecar, or whose size or hash disagrees (a truncated copy, a full disk, a broken sync), is deleted
and rebuilt, never loaded. Builds take an exclusive lock (``.build.lock`` in the build folder), so processes
that start together build once: the others wait, then load the finished library.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..files import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no build lock
    fcntl = None

__all__ = ["SOURCES", "build_dir", "library_path", "compiler", "ensure_built", "verify", "BuildError", "KEEP"]

_CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = sorted(_CSRC.glob("cpu/*.cpp"))
_KEYED = sorted([*_CSRC.glob("cpu/*.cpp"), *_CSRC.glob("cpu/*.h")])  # everything a build depends on
KEEP = 8  # newest libraries kept per build folder (one per source / torch / compiler / CPU combination)
TYPICAL_SECONDS = "15-30 s on 2 cores"


class BuildError(RuntimeError):
    """The native library could not be built; the message holds the compiler's last lines."""


def build_dir() -> Path:
    return Path(os.environ.get("TORCH_ACDC_BUILD_DIR") or Path.home() / ".cache" / "torch_acdc")


def compiler() -> list[str]:
    """The compiler command: ``$CXX`` split like a shell would (``ccache g++`` is two words), else ``c++``."""
    words = shlex.split(os.environ.get("CXX", "") or "c++")
    return words or ["c++"]


def _compile_flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return (["-O3", "-std=c++20", "-fPIC", "-fopenmp", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
            + [f"-I{p}" for p in include_paths()])


def _link_flags() -> list[str]:
    from torch.utils.cpp_extension import library_paths

    return ["-shared", "-fopenmp"] + [f"-L{p}" for p in library_paths()] + ["-lc10", "-ltorch_cpu"]


def _portable(flags: list[str]) -> str:
    """The flags without the folder paths (which differ between virtual environments with the same torch)."""
    return " ".join(f for f in flags if not f.startswith(("-I", "-L")))


def _cpu_features() -> bytes:
    """The CPU's feature flags (Linux), so a cache shared between machines never loads foreign code."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.machine().encode()
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "").encode()


def _compiler_identity() -> bytes:
    """The compiler command and its ``--version`` banner (a changed compiler means a new build)."""
    try:
        out = subprocess.run([*compiler(), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = "unavailable"
    return (" ".join(compiler()) + "\n" + out).encode()


def library_path() -> Path:
    """Where the library for these sources, torch version, compiler, flags and CPU lives."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in _KEYED) + torch.__version__.encode()
                         + str(torch.version.git_version).encode() + _compiler_identity()
                         + (_portable(_compile_flags()) + "|" + _portable(_link_flags())).encode() + _cpu_features())
    return build_dir() / f"acdc_kernels-{key.hexdigest()[:16]}.so"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path) -> str | None:
    """None if ``path`` is a finished build (its sidecar's size and hash match), else why not."""
    try:
        meta = json.loads(_sidecar(path).read_text())
        size = path.stat().st_size
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} is missing"
    except (OSError, ValueError) as e:
        return f"unreadable build record ({e})"
    if not isinstance(meta, dict) or meta.get("size") != size:
        return f"size {size} bytes does not match the recorded {meta.get('size') if isinstance(meta, dict) else '?'}"
    if meta.get("sha256") != _digest(path):
        return "SHA-256 does not match the build record"
    return None


def _run_all(commands: list[list[str]]) -> subprocess.CompletedProcess | None:
    """Run the commands in parallel (one per source file); the first failure, or None."""
    procs = []
    for c in commands:
        try:
            procs.append(subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        except OSError as e:  # the compiler itself is missing
            for p in procs:
                p.kill()
            return subprocess.CompletedProcess(c, 127, "", f"cannot run {c[0]!r}: {e.strerror or e}")
    failed = None
    for cmd, proc in zip(commands, procs):
        _, err = proc.communicate()
        if proc.returncode != 0 and failed is None:
            failed = subprocess.CompletedProcess(cmd, proc.returncode, "", err)
    return failed


def _compile(target: Path) -> None:
    """Compile and link into ``target`` atomically, then write its sidecar (the mark of a finished build)."""
    cxx = compiler()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [str(Path(tmp) / f"{src.stem}.o") for src in SOURCES]
        out = Path(tmp) / target.name
        failed = None
        for arch in (["-march=native"], []):  # a compiler without -march=native: portable code
            failed = _run_all([[*cxx, "-c", str(src), "-o", obj, *_compile_flags(), *arch]
                               for src, obj in zip(SOURCES, objects)])
            failed = failed or _run_all([[*cxx, *objects, "-o", str(out), *_link_flags()]])
            if failed is None:
                break
        if failed is not None:
            raise BuildError(f"{' '.join(cxx)} failed ({failed.returncode}):\n{failed.stderr[-2000:]}")
        meta = {"size": out.stat().st_size, "sha256": _digest(out), "torch": torch.__version__,
                "compiler": " ".join(cxx), "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.replace(out, target)
    atomic_write(_sidecar(target), json.dumps(meta).encode())


@contextlib.contextmanager
def _build_lock(root: Path):
    if fcntl is None:
        yield
        return
    fd = os.open(root / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a concurrent builder
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove(path: Path) -> None:
    for p in (path, _sidecar(path)):
        with contextlib.suppress(OSError):
            p.unlink()


def ensure_built(path: Path | None = None, announce=None) -> tuple[Path, float | None]:
    """A verified library at ``path`` (default :func:`library_path`), building it if needed.

    Returns (path, seconds spent compiling, None if it came from the cache). ``announce(message)`` is called
    once before a compilation starts (default: one line on stderr). Raises :class:`BuildError` when the
    compiler fails, OSError when the build folder cannot be written.
    """
    path = path or library_path()
    if verify(path) is None:
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(path.parent):
        problem = verify(path)
        if problem is None:  # another process finished it while we waited
            return path, None
        if path.exists() or _sidecar(path).exists():
            _remove(path)  # a damaged or unfinished build: never loaded, rebuilt
        (announce or _announce)(f"torch_acdc: compiling the native CPU kernels once ({TYPICAL_SECONDS}) into "
                                f"{path.parent} (ahead of time: `acdc build`) ...")
        start = time.perf_counter()
        _compile(path)
        seconds = time.perf_counter() - start
    prune(path.parent, KEEP)
    return path, seconds


def _announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prune(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest built libraries (and their sidecars) in ``root``. A process that
    still has one loaded keeps its mapping; a deleted one is rebuilt on demand."""
    built = sorted(root.glob("acdc_kernels-*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in built[keep:]:
        _remove(old)
