"""The fused native CPU kernels (csrc/*.cpp): build on first use, load, fake kernels, switch.

The C++ sources are compiled once per (sources, torch version, compiler flags, CPU features) with the system
C++ compiler (one process per file, in parallel, then one link) into one shared library (no ninja, no
pybind11: only ATen headers; ~12 s on 2 cores),
for the machine's own instruction set (``-march=native``, so loops vectorise to AVX2/AVX-512 where present;
retried without it if the compiler refuses), in
``$TORCH_ACDC_BUILD_DIR`` (default ``~/.cache/torch_acdc``) and loaded with ``torch.ops.load_library``. Ops
(``torch.ops.torch_acdc_native``), each one parallel pass (``at::parallel_for``) over (rows, n) memory:

* ``gather_scale(x, idx?, s?, b?, gb)``   x[..., idx] * s + b (gb: + b[idx]) (Makhoul's reorder and its
                                          inverse recognised and run as vectorised structured loops)
* ``bin_map_(z, d, w, add?)``             in place on a raw spectrum (real view (..., h, 2)): the ACDC middle
                                          M^-1 diag(d) M as one symmetric real 2x2 per bin, plus a fixed
                                          spectrum ``add`` (a bias, at no extra pass)
* ``spectral_grads_(v?, z, w, d?)``       batch sums (h, 2) for grad_d and z <- the bin map, in one pass
* ``input_grads(g, x, idx?, a, nx, na)``  grad_x = G^T(a * g) and grad_a = sum_batch G(x) * g together
* ``gather_scale_``, ``input_grads_``     the same in place on a temporary (g becomes grad_x): a row at a
                                          time through an L1 scratch row, no fresh (rows, n) buffer
* ``gather_scale_out(out, x, ...)``       gather_scale into a dead temporary's memory
* ``acdc_forward``, ``acdc_backward``     the whole ACDC operator and its gradients, the passes above and
                                          torch's FFTs called from C++ (one op call each: no Python between
                                          the passes, which is most of a small layer's cost)

and for AFDF (csrc/afdf_kernels.cpp; x (..., n), a and d (n, 2) real pairs, spectra as real views (..., h, 2)):

* ``afdf_stack(x, a)``                    (a_r x, a_i x) stacked as (..., 2, n): the forward rfft's input
* ``afdf_mix(s, d)``                      p S_0 + q S_1 into a fresh (..., h, 2) spectrum (p, q from d)
* ``afdf_grad_spectra(g, d)``             (conj(p) G, conj(q) G) as a fresh (..., 2, h, 2)
* ``afdf_grad_spectra_sums_(g, s, d, m)`` grad_d (n, 2) from the batch sums G conj(S), and (if m) s <- the
                                          above in place, in one pass
* ``afdf_input_grads(r, x, a, nx, na)``   grad_x = a_r r_0 + a_i r_1 and grad_a = sum_batch x r (n, 2) together

:func:`usable` decides per call: native kernels run for float32/float64 CPU tensors outside grad mode and
functorch transforms; everything else (CUDA, vmap, double backward, low precision) takes the pure-torch path,
which is also the tested reference. ``TORCH_ACDC_NATIVE=0`` forces the torch path; if the build fails, one
warning says why and the torch path is used.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

__all__ = ["available", "enabled", "usable", "use_native", "build_seconds", "library_path", "retain_freed_memory"]

_DTYPES = (torch.float32, torch.float64)
_SOURCES = sorted((Path(__file__).with_name("csrc")).glob("*.cpp"))
_state = {"loaded": None, "error": None, "seconds": None, "enabled": os.environ.get("TORCH_ACDC_NATIVE", "1") != "0"}


def _compile_flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return (["-O3", "-std=c++20", "-fPIC", "-fopenmp", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
            + [f"-I{p}" for p in include_paths()])


def _link_flags() -> list[str]:
    from torch.utils.cpp_extension import library_paths

    return ["-shared", "-fopenmp"] + [f"-L{p}" for p in library_paths()] + ["-lc10", "-ltorch_cpu"]


def _flags() -> list[str]:
    return _compile_flags() + _link_flags()


def _cpu_features() -> bytes:
    """The CPU's feature flags (Linux), so a cache shared between machines never loads foreign code."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.machine().encode()
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "").encode()


def library_path() -> Path:
    """Where the built library for these sources, torch version, flag set and CPU lives."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES) + torch.__version__.encode()
                         + " ".join(_flags()).encode() + _cpu_features())
    root = Path(os.environ.get("TORCH_ACDC_BUILD_DIR") or Path.home() / ".cache" / "torch_acdc")
    return root / f"acdc_kernels-{key.hexdigest()[:16]}.so"


def _run_all(commands: list[list[str]]) -> subprocess.CompletedProcess | None:
    """Run the commands in parallel (one per source file: the cores compile side by side); the first failure."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    failed = None
    for cmd, proc in zip(commands, procs):
        _, err = proc.communicate()
        if proc.returncode != 0 and failed is None:
            failed = subprocess.CompletedProcess(cmd, proc.returncode, "", err)
    return failed


def _build(target: Path) -> float:
    """Compile the sources (in parallel) and link them into ``target`` (atomically: concurrent builders never
    see half a file). Seconds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    print(f"torch_acdc: compiling the native CPU kernels once into {target.parent} ...", file=sys.stderr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [str(Path(tmp) / f"{src.stem}.o") for src in _SOURCES]
        out = Path(tmp) / target.name
        failed = None
        for arch in (["-march=native"], []):  # a compiler without -march=native: portable (SSE2) code
            failed = _run_all([[cxx, "-c", str(src), "-o", obj, *_compile_flags(), *arch]
                               for src, obj in zip(_SOURCES, objects)])
            failed = failed or _run_all([[cxx, *objects, "-o", str(out), *_link_flags()]])
            if failed is None:
                break
        if failed is not None:
            raise RuntimeError(f"{cxx} failed ({failed.returncode}):\n{failed.stderr[-2000:]}")
        os.replace(out, target)
    _prune(target.parent, keep=4)
    return time.perf_counter() - start


def _prune(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest built libraries in ``root`` (older sources / torch versions pile up
    otherwise). A process that still has one loaded keeps its mapping; a deleted one is rebuilt on demand."""
    built = sorted(root.glob("acdc_kernels-*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in built[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _register_fakes() -> None:
    lib = "torch_acdc_native::"

    @torch.library.register_fake(lib + "gather_scale")
    def _(x, idx, s, b, gather_b=False):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake(lib + "gather_scale_")
    def _(x, idx, s, b, gather_b=False):
        return None

    @torch.library.register_fake(lib + "gather_scale_out")
    def _(out, x, idx, s, b, gather_b=False):
        return None

    @torch.library.register_fake(lib + "input_grads_")
    def _(g, x, idx, a, need_x, need_a):
        return g.new_empty(g.shape[-1]) if need_a else g.new_empty(0)

    @torch.library.register_fake(lib + "acdc_forward")
    def _(x, a_p, d, b_m, in_idx, out_idx, w):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake(lib + "acdc_backward")
    def _(grad_y, x, a_p, d, in_idx, out_inv, w, unpack, scale_sq, need_x, need_a, need_d, need_b):
        n = x.shape[-1]
        return (torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0),
                *(x.new_empty(n) if need else x.new_empty(0) for need in (need_a, need_d, need_b)))

    @torch.library.register_fake(lib + "bin_map_")
    def _(z, d, w, add):
        return None

    @torch.library.register_fake(lib + "spectral_grads_")
    def _(v, z, w, d):
        return z.new_empty((z.shape[-2] if v is not None else 0, 2))

    @torch.library.register_fake(lib + "input_grads")
    def _(g, x, idx, a, need_x, need_a):
        return (torch.empty_like(g, memory_format=torch.contiguous_format) if need_x else g.new_empty(0),
                g.new_empty(g.shape[-1]) if need_a else g.new_empty(0))

    @torch.library.register_fake(lib + "afdf_stack")
    def _(x, a):
        return x.new_empty(*x.shape[:-1], 2, x.shape[-1])

    @torch.library.register_fake(lib + "afdf_mix")
    def _(s, d):
        return s.new_empty(*s.shape[:-3], d.shape[0] // 2 + 1, 2)

    @torch.library.register_fake(lib + "afdf_grad_spectra")
    def _(g, d):
        return g.new_empty(*g.shape[:-2], 2, d.shape[0] // 2 + 1, 2)

    @torch.library.register_fake(lib + "afdf_grad_spectra_sums_")
    def _(g, s, d, map):
        return g.new_empty(d.shape[0], 2)

    @torch.library.register_fake(lib + "afdf_input_grads")
    def _(r, x, a, need_x, need_a):
        return (torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0),
                x.new_empty(a.shape[0], 2) if need_a else x.new_empty(0))


def available() -> bool:
    """True once the native library is built and loaded (builds on the first call; warns once on failure)."""
    if _state["loaded"] is None:
        try:
            path = library_path()
            if not path.exists():
                _state["seconds"] = _build(path)
            torch.ops.load_library(str(path))
            _register_fakes()
            _state["loaded"] = True
        except Exception as e:  # no compiler, headers missing, ...: fall back, say so once
            _state["loaded"], _state["error"] = False, e
            warnings.warn(f"torch_acdc: native CPU kernels unavailable, using the pure-torch path "
                          f"(set TORCH_ACDC_NATIVE=0 to silence): {e}", RuntimeWarning, stacklevel=2)
    return _state["loaded"]


def build_seconds() -> float | None:
    """Compile time of the build done by this process (None if the library came from the cache)."""
    return _state["seconds"]


def enabled() -> bool:
    """Whether the native path is switched on (``TORCH_ACDC_NATIVE`` / :func:`use_native`)."""
    return _state["enabled"]


@contextlib.contextmanager
def use_native(flag: bool):
    """Context manager switching the native path on or off (for tests and side-by-side benchmarks)."""
    old = _state["enabled"]
    _state["enabled"] = bool(flag)
    try:
        yield
    finally:
        _state["enabled"] = old


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the native kernels may run on these tensors now: switched on, outside grad mode (the kernels
    are not differentiable), functorch transforms and torch.compile / export tracing, plain float32/float64
    CPU tensors of one dtype, and the library loads. (Kept cheap: it runs on every call.)"""
    if (not _state["enabled"] or torch.is_grad_enabled() or torch._C._are_functorch_transforms_active()
            or torch.compiler.is_compiling()):  # tracing records the pure-torch ops
        return False
    dtype = None
    for t in tensors:
        if t is None or not t.dtype.is_floating_point:
            continue
        if not t.is_cpu or t.dtype not in _DTYPES or (dtype is not None and t.dtype != dtype):
            return False
        if torch._C._functorch.is_functorch_wrapped_tensor(t) or torch._C._functorch.is_legacy_batchedtensor(t):
            return False
        dtype = t.dtype
    return available()


def ops():
    """The loaded ops namespace (call :func:`usable` first)."""
    return torch.ops.torch_acdc_native


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel: allocations below
    32 MiB come from the heap (``M_MMAP_THRESHOLD``) and the heap is not trimmed below 1 GiB of free space
    (``M_TRIM_THRESHOLD``). Process-wide; returns False where it does not apply (not glibc).

    Why: every fresh page the kernel maps in costs a page fault, and with glibc's default (dynamic)
    thresholds a training step of a large layer frees and re-maps its (B, n) temporaries; on the 2-core VM
    this made one rfft of (256, 4096) 2.5x slower and a forward+backward ~30% slower (docs/performance.md).
    The cost: the process keeps its peak heap (RSS does not shrink after a large step). The ``acdc``
    commands call this at start (``--system-malloc`` opts out); a library import never does.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
