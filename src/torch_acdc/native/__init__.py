"""The fused native CPU kernels (``csrc/cpu/*.cpp``): whether they are switched on, built and loaded.

This package only *provides* the kernels; which implementation a call takes is decided by
:mod:`torch_acdc.dispatch`. Building and the validated build cache: :mod:`torch_acdc.native.builder`; fake
kernels beside the op schemas: :mod:`torch_acdc.native.fakes`; adding a kernel (for another device too):
``src/torch_acdc/csrc/README.md``.

Ops (``torch.ops.torch_acdc_native``), each the whole operator in one call, FFTs included:

* ``acdc_forward(x, a, d, b?, param_idx?, in_idx?, out_idx?, w, keep) -> (y, spectrum)``
* ``acdc_backward(grad_y, x, a, d, spectrum?, param_idx?, in_idx?, out_inv?, w, unpack, scale_sq,
  need_x, need_a, need_d, need_b) -> (grad_x, grad_a, grad_d, grad_b)``
* ``afdf_stack``, ``afdf_mix``, ``afdf_grad_spectra``, ``afdf_grad_spectra_sums_``, ``afdf_input_grads``: the
  fused passes of AFDF (see :mod:`torch_acdc.afdf`).

``TORCH_ACDC_NATIVE`` = ``0`` / ``false`` / ``off`` / ``no`` switches the native path off (``1`` / ``true`` /
``on`` / ``yes``, or unset: on); :func:`use_native` does the same for a block. If the build fails, one
warning says why and the pure-torch path runs; :func:`build` retries.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from . import builder as _build_mod
from .builder import BuildError, library_path

__all__ = ["available", "enabled", "fft_plans", "use_native", "build", "build_seconds", "library_path", "ops", "status",
           "BuildError"]

_OFF, _ON = ("0", "false", "off", "no"), ("1", "true", "on", "yes", "")


def _env_enabled() -> bool:
    value = os.environ.get("TORCH_ACDC_NATIVE", "").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        warnings.warn(f"TORCH_ACDC_NATIVE={os.environ['TORCH_ACDC_NATIVE']!r} is not one of "
                      f"{'/'.join(_ON[:-1])} or {'/'.join(_OFF)}; the native kernels stay on", RuntimeWarning,
                      stacklevel=3)
    return True


_state = {"loaded": None, "error": None, "seconds": None, "path": None, "enabled": _env_enabled()}


def _load(announce=None) -> bool:
    path, seconds = _build_mod.ensure_built(announce=announce)
    torch.ops.load_library(str(path))
    from . import fakes

    fakes.register()
    _state.update(loaded=True, error=None, seconds=seconds, path=path)
    return True


def _attempt(announce=None) -> Exception | None:
    """Build (if needed) and load the library once; the failure, recorded in the state, or None."""
    try:
        _load(announce)
        return None
    except Exception as e:  # noqa: BLE001 - every failure means the same: the pure-torch path runs
        _state.update(loaded=False, error=e)
        return e


def available() -> bool:
    """True once the native library is built, verified and loaded (builds on the first call; on failure warns
    once and returns False until :func:`build` is called again)."""
    if _state["loaded"] is None:
        e = _attempt()
        if e is not None:  # no compiler, headers missing, unwritable cache: fall back, say so once
            warnings.warn(f"torch_acdc: native CPU kernels unavailable, using the pure-torch path "
                          f"(set TORCH_ACDC_NATIVE=0 to silence): {e}", RuntimeWarning, stacklevel=2)
    return bool(_state["loaded"])


def build(announce=None) -> Path:
    """Build (or verify the cached build of) the native library now and load it: the ahead-of-time step
    (``acdc build``). Retries after an earlier failure. Returns the library's path; raises
    :class:`BuildError` / OSError when it cannot be built."""
    if not _state["loaded"]:
        e = _attempt(announce)
        if e is not None:
            raise e
    return _state["path"]


def build_seconds() -> float | None:
    """Compile time of the build done by this process (None if the library came from the cache)."""
    return _state["seconds"]


def status() -> str:
    """One line: whether the kernels are on, loaded, and from where (or why not)."""
    if not _state["enabled"]:
        return "switched off (TORCH_ACDC_NATIVE / use_native)"
    if _state["loaded"] is None:
        return "not loaded yet (built or loaded on first use)"
    if not _state["loaded"]:
        return f"unavailable: {_state['error']}"
    return f"loaded from {_state['path']}"


def enabled() -> bool:
    """Whether the native path is switched on (``TORCH_ACDC_NATIVE`` / :func:`use_native`)."""
    return _state["enabled"]


@contextlib.contextmanager
def switched(state: dict, key: str, flag: bool):
    """Context manager: ``state[key] = bool(flag)`` for the block, the old value restored after it."""
    old = state[key]
    state[key] = bool(flag)
    try:
        yield
    finally:
        state[key] = old


def use_native(flag: bool):
    """Context manager switching the native path on or off (for tests and side-by-side benchmarks)."""
    return switched(_state, "enabled", flag)


def fft_plans(keep: bool | None = None) -> int:
    """The native kernels' FFT plan cache: ``keep=True`` keeps MKL descriptors between calls (the default
    where libtorch has MKL), ``False`` clears them and uses torch's own FFT (which builds one per call),
    ``None`` only asks. Returns the number of plans cached, or -1 when plans are off or unavailable."""
    if not available():
        return -1
    return int(ops().fft_plans(-1 if keep is None else int(bool(keep))))


def ops():
    """The loaded ops namespace (:mod:`torch_acdc.dispatch` decides when to call it)."""
    return torch.ops.torch_acdc_native
