"""Which implementation runs each operation: decided here, and nowhere else.

Every call of an operation takes two decisions, each made by one function below from the inputs and the
ambient mode:

* the **route** through autograd (:func:`route`):

  ``compiled``   torch.compile / torch.export is tracing: the opaque ``torch_acdc::`` custom op
                 (:mod:`torch_acdc.compile_ops`), with its own backward formula;
  ``functorch``  a functorch transform (vmap, grad, jvp, ...) is active: the new-style autograd Function
                 (generated vmap rule, explicit jvp);
  ``inference``  nothing can observe a gradient (grad mode off or no input requires grad, no forward-mode
                 level open): the kernel is called directly, no autograd node, no saved tensors;
  ``autograd``   otherwise: the eager autograd Function (old-style ``forward(ctx, ...)``: no per-call
                 signature binding), which keeps the forward spectrum for the backward (:func:`keep_spectrum`).

* the **kernel** that does the arithmetic (:func:`kernel`): ``native`` (the fused CPU ops of
  :mod:`torch_acdc.native`) or ``torch`` (plain torch ops: any device, differentiable again, the tested
  reference). Native needs: switched on, no tracing, no functorch transform, no differentiable result wanted
  (grad mode on with an input that requires grad: double backward), CPU tensors of one dtype, float32 or
  float64, an operation that has a native kernel (:data:`KERNELS`), and the library loaded.

:func:`explain` gives both decisions for a module or an operation on given inputs, with the reason every
other implementation was not taken (``acdc bench`` prints it for the benchmarked layer). The two fast
functions are what the call sites use: a handful of attribute reads, nothing cached across calls that the
ambient mode could invalidate.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as forward_ad

from . import native
from .tables import tracing

__all__ = ["route", "kernel", "choose", "native_inference", "explain", "Decision", "KERNELS", "ROUTES", "keep_spectrum", "keeping_spectrum",
           "tracing", "in_place_ok", "cache_allowed"]

ROUTES = ("compiled", "functorch", "inference", "autograd")
KERNELS = {"acdc": ("native", "torch"), "afdf": ("native", "torch"), "lstm": ("native", "torch"),
           "gather": ("torch",), "dct": ("torch",)}
_DTYPES = (torch.float32, torch.float64)
_keep = {"on": os.environ.get("TORCH_ACDC_KEEP_SPECTRUM", "1").strip().lower() not in ("0", "false", "off", "no")}


def _wrapped(t: torch.Tensor) -> bool:
    """A vmap/functorch wrapper (new or legacy): writing into it in place is not allowed."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t) or torch._C._functorch.is_legacy_batchedtensor(t)


def in_place_ok(x: torch.Tensor, s: torch.Tensor) -> bool:
    """Whether a pure-torch pass may write its temporary ``x`` in place (no autograd graph, no vmap wrapper
    can observe it)."""
    return not (torch.is_grad_enabled() or _wrapped(x) or _wrapped(s))


def cache_allowed(t: torch.Tensor) -> bool:
    """Whether a per-module cache derived from ``t`` may be used now: not while tracing (the compiler folds
    the integer ops), not for an inference tensor (no version counter), not under a functorch transform
    (torch.func.functional_call swaps buffers)."""
    return not (tracing() or t.is_inference() or torch._C._are_functorch_transforms_active())


def _observed(tensors) -> bool:
    """Some autodiff can observe this call: a forward-mode level is open, or grad mode is on and an input
    requires grad."""
    if forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def route(*tensors: torch.Tensor | None) -> str:
    """The autograd route of a call on ``tensors`` now: one of :data:`ROUTES`."""
    if torch.compiler.is_compiling():
        return "compiled"
    if torch._C._are_functorch_transforms_active():
        return "functorch"
    return "autograd" if _observed(tensors) else "inference"


def choose(*tensors: torch.Tensor | None, op: str = "acdc") -> tuple[str, str]:
    """``(route(*tensors), kernel)`` in one call: the kernel the route's work runs on (for the ``autograd``
    route, the kernel its forward and backward take, where grad mode is off)."""
    r = route(*tensors)
    if r == "autograd":
        with torch.no_grad():
            return r, kernel(*tensors, op=op)
    return r, kernel(*tensors, op=op)


def native_inference(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """The fast form of :func:`route` + :func:`kernel` for a caller that has already checked that x and the
    parameters are plain tensors of one float32/float64 dtype on x's device: true when nothing can observe a
    gradient and the call runs the native kernel directly (the ``inference`` route, ``native`` kernel)."""
    state = native._state
    if not (state["loaded"] is True and state["enabled"] and x.is_cpu):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        return False
    return (not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
            and forward_ad._current_level < 0 and not _wrapped(x))


def kernel(*tensors: torch.Tensor | None, op: str = "acdc") -> str:
    """``"native"`` or ``"torch"``: the kernel for ``op`` on ``tensors`` now (see the module docstring)."""
    if not native._state["enabled"] or "native" not in KERNELS[op]:
        return "torch"
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return "torch"
    grad = torch.is_grad_enabled()
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if not t.is_cpu or (grad and t.requires_grad) or _wrapped(t):
            return "torch"
        if t.dtype.is_floating_point:
            if dtype is None:
                if t.dtype not in _DTYPES:
                    return "torch"
                dtype = t.dtype
            elif t.dtype != dtype:
                return "torch"
    return "native" if (native._state["loaded"] or native.available()) else "torch"


def _kernel_reasons(op: str, tensors) -> dict[str, str]:
    """Why each kernel other than the chosen one was not taken: :func:`kernel`'s rules, spelled out (kernel
    is the fast form used on every call; tests/test_dispatch.py checks that the two always agree)."""
    if "native" not in KERNELS[op]:
        return {"native": f"no native kernel for {op!r}"}
    checks = [
        (not native.enabled(), "switched off (TORCH_ACDC_NATIVE=0 or native.use_native(False))"),
        (torch.compiler.is_compiling(), "torch.compile / export tracing: the pure-torch ops are recorded"),
        (torch._C._are_functorch_transforms_active(), "a functorch transform (vmap, grad, jvp) is active"),
        (torch.is_grad_enabled() and any(t.requires_grad for t in tensors),
         "a differentiable result is wanted (grad mode on and an input requires grad: double backward)"),
        (any(_wrapped(t) for t in tensors), "a batched (vmap) tensor"),
        (any(not t.is_cpu for t in tensors),
         f"not all tensors are on the CPU ({sorted({str(t.device) for t in tensors})})"),
        (len({t.dtype for t in tensors if t.dtype.is_floating_point}) > 1,
         f"mixed dtypes ({sorted({str(t.dtype) for t in tensors if t.dtype.is_floating_point})})"),
        (any(t.dtype.is_floating_point and t.dtype not in _DTYPES for t in tensors),
         "dtype is not float32/float64"),
    ]
    for failed, reason in checks:
        if failed:
            return {"native": reason}
    if not native.available():
        return {"native": f"library unavailable: {native.status()}"}
    return {"torch": "the native kernel applies (torch is the reference and fallback)"}


def _route_reasons(chosen: str) -> dict[str, str]:
    why = {"compiled": "not tracing under torch.compile / export",
           "functorch": "no functorch transform is active",
           "inference": "a gradient can be observed (grad mode on and an input requires grad, or forward AD)",
           "autograd": "nothing can observe a gradient: the kernel is called without an autograd node"}
    out = {}
    for r in ROUTES:
        if r != chosen:
            later = ROUTES.index(r) > ROUTES.index(chosen)
            out[r] = f"the {chosen} route takes precedence" if later and chosen in ("compiled", "functorch") else why[r]
    return out


@dataclass(frozen=True)
class Decision:
    """The path of one call: its autograd ``route``, its ``kernel``, and why the others were not taken."""

    op: str
    route: str
    kernel: str
    not_taken: dict = field(default_factory=dict)

    def __str__(self) -> str:
        others = "; ".join(f"{name}: {why}" for name, why in self.not_taken.items())
        return f"{self.op}: route={self.route}, kernel={self.kernel} (not taken - {others})"


def _module_op(module) -> tuple[str, list[torch.Tensor]]:
    from .afdf import AFDF, StackedAFDF

    op = "afdf" if isinstance(module, (AFDF, StackedAFDF)) else "acdc"
    return op, [p for p in module.parameters(recurse=True)]


def explain(target, x: torch.Tensor, *params: torch.Tensor) -> Decision:
    """The implementation a call takes and why the others were not, for a module (``explain(layer, x)``) or an
    operation name with its tensors (``explain("acdc", x, a, d)``), in the current mode.

    Inside a layer the kernel runs under autograd's backward/forward with grad mode off, so for the
    ``autograd`` route the kernel is the one those calls take."""
    if isinstance(target, str):
        if target not in KERNELS:
            raise ValueError(f"unknown operation {target!r}: expected one of {sorted(KERNELS)}")
        op, tensors = target, [x, *params]
    else:
        op, tensors = _module_op(target)
        tensors = [x, *tensors]
    r = route(*tensors)
    with torch.no_grad() if r == "autograd" else contextlib.nullcontext():
        plain = [t.detach() for t in tensors] if r == "autograd" else tensors
        k = kernel(*plain, op=op)
        reasons = {**_route_reasons(r), **_kernel_reasons(op, plain)}
    return Decision(op, r, k, {name: why for name, why in reasons.items() if name not in (r, k)})


def lstm_path(hh, x_gates: torch.Tensor, h0, c0) -> str:
    """``"native"``: an ACDC LSTM layer's time loop runs as one native op per direction (the eager routes
    with the native kernel, a linear hidden stack in Makhoul order whose parameters match x's dtype);
    ``"torch"``: the step-by-step reference loop (compile, functorch, CUDA, ...). The native backward is
    differentiable once: for double backward through an ACDCLSTM, run it under
    ``torch_acdc.native.use_native(False)``."""
    tensors = (x_gates, h0, c0, hh.a, hh.d)
    r, k = choose(*tensors, op="lstm")
    if r not in ("inference", "autograd") or k != "native":
        return "torch"
    if hh.activation is not None or hh.a.dtype != x_gates.dtype or (h0 is not None and h0.dtype != x_gates.dtype):
        return "torch"
    return "native"


def keep_spectrum() -> bool:
    """Whether the autograd route keeps each ACDC layer's forward spectrum for its backward (default on: 4 FFTs
    per forward+backward instead of 5, at one complex (rows, n//2 + 1) tensor per layer, about the size of
    the layer's input, held until the backward). ``TORCH_ACDC_KEEP_SPECTRUM=0`` or :func:`keeping_spectrum`
    switch back to recomputing it."""
    return _keep["on"]


def keeping_spectrum(flag: bool):
    """Context manager: keep the forward spectrum (True) or recompute it in the backward (False)."""
    return native.switched(_keep, "on", flag)
