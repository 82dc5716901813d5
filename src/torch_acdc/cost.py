"""Cost model: parameters, multiply-adds and memory traffic of models mixing ACDC and dense layers, and the
per-layer choice between the structured form and its re-materialised dense matrix for inference.

Units. A multiply-add (MAC) is one real multiplication and one addition (FLOPs ~ 2 x MACs). Memory is counted
in tensor elements read plus written. Every cost is for **one call** of a layer on the input shape it sees.

FFT model. A real FFT (rfft or irfft) of length n costs (n/2) log2(n) complex multiply-adds, i.e.
``fft_mult_adds(n) = 2 n log2 n`` real MACs (any n: the transforms are O(n log n) for every length).

Layer models (per row of n features; rows = input elements / features):

* ``nn.Linear(in, out)``: in*out MACs; memory in + out per row plus the in*out (+out) weights; 1 pass.
* ``nn.Conv2d``: out_pixels * (C_in/groups) * kh * kw * C_out MACs; memory input + output + weight; 1 pass.
* ACDC layer: 2 FFTs + 7n elementwise MACs (a; twiddle and untwiddle, 2 complex products per bin ~ 4n; the
  per-bin diagonal ~ n; bias n); 7 passes over the row (a, rfft, twiddle, diagonal, untwiddle, irfft, bias)
  plus the gathers into and out of Makhoul order, each pass reading and writing the row; 3n parameters read.
  ``StackedACDC``: depth such layers on N = max(in, out), 2 gathers (into and out of Makhoul order), depth - 1
  fused shuffles (if permuted) and a zero-padding pass when in < out. Gathers move memory but do no MACs.
* AFDF layers: the same with 3 FFTs per layer (two-signal rfft + irfft) and 4n complex diagonal entries.

Modelled time. :class:`CostModel` turns a cost into MAC-equivalents,
``mult_adds + balance * memory + overhead * passes``: ``balance`` is how many MACs take as long as moving one
element (machine balance, a roofline in one number) and ``overhead`` the fixed dispatch cost of one pass.
Dense layers do all their work in one efficient pass but read their O(n^2) weights every call; structured
layers do O(n log n) work in many memory-bound passes. Hence the crossover: dense wins for few features (and,
once the weight read is amortised, at large batches), structured for many features. :func:`plan_inference`
and :func:`for_inference` apply it per layer.

Extending. A module declares its own cost with a method ``cost(input_shape) -> LayerCost`` (``input_shape``:
the full shape of its first input for that call); :func:`model_cost` then does not look inside it.
Alternatively register a function for a class with :func:`register_cost`. Modules with neither are looked
into; leaves with parameters but no model are reported as unmodelled (parameters counted, no MACs).
Elementwise activations, normalisations and gates are not counted.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .afdf import AFDF, StackedAFDF
from .layers import ACDC, StackedACDC

__all__ = [
    "LayerCost", "CostModel", "DEFAULT_COST_MODEL", "calibrate", "ModelCost", "Decision",
    "fft_mult_adds", "linear_cost", "diagonal_stack_cost", "conv2d_output_size", "register_cost", "layer_cost",
    "model_cost", "freeze", "is_freezable", "plan_inference", "for_inference",
]

ELEMENTWISE_MACS_PER_FEATURE = 6  # per structured layer and row: a (n), twiddles (~4n), diagonal (~n); bias +n
PASSES_PER_LAYER = 6  # a, rfft, twiddle, diagonal, untwiddle, irfft; bias +1


@dataclass(frozen=True)
class LayerCost:
    """Cost of one call: ``params`` (count), ``mult_adds`` (real MACs), ``memory`` (elements read + written,
    activations and weights), ``passes`` (kernel passes, each with a fixed dispatch overhead)."""

    params: int = 0
    mult_adds: float = 0.0
    memory: float = 0.0
    passes: int = 0

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(self.params + other.params, self.mult_adds + other.mult_adds,
                         self.memory + other.memory, self.passes + other.passes)

    @property
    def flops(self) -> float:
        return 2.0 * self.mult_adds


@dataclass(frozen=True)
class CostModel:
    """Modelled time of a call in MAC-equivalents: ``mult_adds + balance * memory + overhead * passes``.

    Defaults: :func:`calibrate` on the development machine (one core of a 2-core CPU VM, torch 2.13 eager,
    fp32): moving an element costs ~10 MACs, and one pass of the structured path (Python, autograd Function
    and kernel dispatch, ~30 us) ~2.5e6 MACs. With them the model picked the faster form in 54/54 measured
    cases (``acdc cost --calibrate --measure``). Calibrate again for another machine.
    """

    balance: float = 10.0
    overhead: float = 2.5e6

    def estimate(self, cost: LayerCost) -> float:
        return cost.mult_adds + self.balance * cost.memory + self.overhead * cost.passes


DEFAULT_COST_MODEL = CostModel()


def calibrate(device="cpu", repeats: int = 20) -> CostModel:
    """Measure a :class:`CostModel` for this machine (fp32, eager mode, a few seconds).

    MAC rate r: a (256 x 512) @ (512 x 512) GEMM. ``balance`` = r / (elements per second of a 16M-element
    copy, read + write). ``overhead`` = r x (time per pass of a tiny StackedACDC(8, 8, depth=4) on one row),
    i.e. the fixed cost per pass of the structured path as it really runs, Python dispatch included.
    """
    from .bench import median_ms

    device = torch.device(device)
    with torch.no_grad():
        gemm = nn.Linear(512, 512, device=device)
        x = torch.randn(256, 512, device=device)
        mac_per_ms = 256 * 512 * 512 / median_ms(lambda: gemm(x), repeats, device=device)
        big = torch.randn(2**24, device=device)
        out = torch.empty_like(big)
        elem_per_ms = 2 * big.numel() / median_ms(lambda: out.copy_(big), max(3, repeats // 4), device=device)
        tiny = StackedACDC(8, 8, 4, device=device)
        row = torch.randn(1, 8, device=device)
        per_pass_ms = median_ms(lambda: tiny(row), repeats, device=device) / layer_cost(tiny, (1, 8)).passes
    return CostModel(balance=mac_per_ms / elem_per_ms, overhead=mac_per_ms * per_pass_ms)


def fft_mult_adds(n: int) -> float:
    """Real MACs of one real FFT of length n: (n/2) log2(n) complex MACs = 2 n log2 n (0 for n = 1)."""
    return 2.0 * n * math.log2(n) if n > 1 else 0.0


def linear_cost(in_features: int, out_features: int, rows: int = 1, bias: bool = True) -> LayerCost:
    """A dense ``x @ W.T + b`` on ``rows`` rows: one GEMM pass that reads the (out x in) weight once."""
    weights = in_features * out_features + (out_features if bias else 0)
    return LayerCost(params=weights, mult_adds=float(rows * in_features * out_features),
                     memory=float(rows * (in_features + out_features) + weights), passes=1)


def diagonal_stack_cost(n: int, rows: int = 1, depth: int = 1, bias: bool = True, ffts_per_layer: int = 2,
                        params_per_layer: int | None = None, gathers: int | None = None,
                        pad: bool = False) -> LayerCost:
    """``depth`` structured layers (ACDC: 2 FFTs, AFDF: 3) on ``rows`` rows of width n (see module docstring).

    ``params_per_layer`` defaults to the ACDC count 2n (+n bias); ``gathers`` (default depth + 1, as in
    StackedACDC) are the permutation passes; ``pad`` adds the zero-padding pass of a stack whose input is
    narrower than n. Every pass reads and writes the (rows x n) activations once.
    """
    per_layer = params_per_layer if params_per_layer is not None else (3 if bias else 2) * n
    gathers = depth + 1 if gathers is None else gathers
    passes = depth * (PASSES_PER_LAYER + int(bias)) + gathers + int(pad)
    macs = depth * rows * (ffts_per_layer * fft_mult_adds(n) + (ELEMENTWISE_MACS_PER_FEATURE + int(bias)) * n)
    memory = passes * 2 * rows * n + depth * per_layer
    return LayerCost(params=depth * per_layer, mult_adds=float(macs), memory=float(memory), passes=passes)


def _rows(input_shape, features: int) -> int:
    return math.prod(input_shape) // features


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


_REGISTRY: dict[type, Callable[[nn.Module, tuple], LayerCost]] = {}


def register_cost(cls: type):
    """Decorator: register ``fn(module, input_shape) -> LayerCost`` as the cost of ``cls`` (and subclasses)."""
    def wrap(fn):
        _REGISTRY[cls] = fn
        return fn
    return wrap


@register_cost(nn.Linear)
def _linear(m: nn.Linear, shape) -> LayerCost:
    return linear_cost(m.in_features, m.out_features, _rows(shape, m.in_features), m.bias is not None)


def conv2d_output_size(m: nn.Module, h: int, w: int) -> tuple[int, int]:
    """(H_out, W_out) of a 2-D convolution ``m`` (its ``kernel_size``, ``stride``, ``padding``, ``dilation``)
    on an (H, W) input, by nn.Conv2d's formula; padding may be 'same' or 'valid'."""
    padding = (0, 0) if isinstance(m.padding, str) else m.padding
    if m.padding == "same":
        return h, w
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, d, p in zip((h, w), m.kernel_size, m.stride, m.dilation, padding))


@register_cost(nn.Conv2d)
def _conv2d(m: nn.Conv2d, shape) -> LayerCost:
    *lead, _, h, w = shape
    out_h, out_w = conv2d_output_size(m, h, w)
    out_pixels = math.prod(lead) * out_h * out_w
    weights = _numel(m)
    macs = out_pixels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] * m.out_channels
    memory = math.prod(shape) + out_pixels * m.out_channels + weights
    return LayerCost(params=weights, mult_adds=float(macs), memory=float(memory), passes=1)


def _diagonal_cost(m: nn.Module, shape, ffts: int, order_gathers: int) -> LayerCost:
    """A DiagonalLayer (depth 1) or DiagonalStack; ``order_gathers``: gathers into/out of the working order."""
    depth, n = getattr(m, "depth", 1), getattr(m, "features", m.in_features)
    shuffles = depth - 1 if getattr(m, "permutation", None) is not None else 0
    return diagonal_stack_cost(n, _rows(shape, m.in_features), depth, m.bias is not None, ffts,
                               params_per_layer=_numel(m) // depth, gathers=order_gathers + shuffles,
                               pad=m.in_features < n)


@register_cost(ACDC)
@register_cost(StackedACDC)
def _acdc(m: nn.Module, shape) -> LayerCost:
    return _diagonal_cost(m, shape, ffts=2, order_gathers=2)  # into and out of Makhoul order


@register_cost(AFDF)
@register_cost(StackedAFDF)
def _afdf(m: nn.Module, shape) -> LayerCost:
    return _diagonal_cost(m, shape, ffts=3, order_gathers=0)  # acts in natural order


def _handler(module: nn.Module):
    if callable(getattr(module, "cost", None)):
        return lambda m, shape: m.cost(shape)
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def layer_cost(module: nn.Module, input_shape) -> LayerCost:
    """Cost of one call of a modelled ``module`` on an input of ``input_shape`` (full shape, batch included)."""
    handler = _handler(module)
    if handler is None:
        raise TypeError(f"no cost model for {type(module).__name__}: give it a cost(input_shape) method or "
                        "register one with torch_acdc.cost.register_cost")
    return handler(module, tuple(input_shape))


@dataclass
class ModelCost:
    """Per-module costs of one forward (``layers``: (qualified name, type name, LayerCost)), their ``total``,
    and the names of parameterised leaves with no cost model (``unmodelled``: parameters counted, no MACs)."""

    layers: list[tuple[str, str, LayerCost]] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)

    @property
    def total(self) -> LayerCost:
        return sum((c for _, _, c in self.layers), LayerCost())


def _record_input_shapes(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, list[tuple]]:
    calls: dict[nn.Module, list[tuple]] = {}

    def hook(module, args):
        if args and isinstance(args[0], torch.Tensor):
            calls.setdefault(module, []).append(tuple(args[0].shape))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def model_cost(model: nn.Module, input_shape, dtype: torch.dtype = torch.float32) -> ModelCost:
    """Costs of ``model`` on one forward of ``torch.zeros(input_shape)`` (use batch 1 for per-example costs).

    Input shapes of every submodule are recorded with forward pre-hooks, so any forward (loops, reshapes,
    modules called several times) is followed; a module called k times contributes k calls but its
    parameters once. Device: the model's (its first parameter's, else CPU).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    calls = _record_input_shapes(model, torch.zeros(tuple(input_shape), dtype=dtype, device=device))
    report = ModelCost()

    def visit(name: str, module: nn.Module) -> None:
        handler = _handler(module)
        if handler is not None:
            shapes = calls.get(module, [])
            if shapes:
                costs = [handler(module, s) for s in shapes]
                total = sum(costs, LayerCost())  # k calls: k times the work, the parameters once
                report.layers.append((name, type(module).__name__,
                                      LayerCost(costs[0].params, total.mult_adds, total.memory, total.passes)))
            elif _numel(module):
                report.layers.append((name, type(module).__name__, LayerCost(params=_numel(module))))
            return
        own = sum(p.numel() for p in module.parameters(recurse=False))
        children = list(module.named_children())
        if own:
            report.unmodelled.append(name or type(module).__name__)
            report.layers.append((name, type(module).__name__, LayerCost(params=own)))
        for child_name, child in children:
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return report


# ---------------------------------------------------------------------------------------------- inference


def is_freezable(module: nn.Module) -> bool:
    """True for linear structured layers that can become an nn.Linear: they have ``to_dense()``,
    ``in_features``/``out_features`` and no activation (ACDC, linear StackedACDC, AFDF, linear StackedAFDF)."""
    return (isinstance(module, (ACDC, StackedACDC, AFDF, StackedAFDF))
            and getattr(module, "activation", None) is None)


def freeze(module: nn.Module) -> nn.Linear:
    """The equivalent ``nn.Linear``: weight = ``module.to_dense()``, bias = ``module(0)`` (same dtype/device)."""
    if not is_freezable(module):
        raise TypeError(f"freeze() expects a linear ACDC/AFDF layer or stack, got {type(module).__name__}"
                        + (" with an activation" if getattr(module, "activation", None) is not None else ""))
    with torch.no_grad():
        weight = module.to_dense()
        has_bias = getattr(module, "bias", None) is not None
        linear = nn.Linear(module.in_features, module.out_features, bias=has_bias, device=weight.device,
                           dtype=weight.dtype)
        linear.weight.copy_(weight)
        if has_bias:
            linear.bias.copy_(module(torch.zeros(1, module.in_features, dtype=weight.dtype,
                                                 device=weight.device))[0])
    return linear


@dataclass(frozen=True)
class Decision:
    """One layer's inference choice: modelled costs (MAC-equivalents) of both forms at ``rows`` rows per call."""

    name: str
    rows: int
    structured: float
    dense: float

    @property
    def choice(self) -> str:
        return "dense" if self.dense < self.structured else "structured"


def plan_inference(model: nn.Module, batch_size: int, cost_model: CostModel = DEFAULT_COST_MODEL,
                   example_shape=None) -> list[Decision]:
    """For every freezable layer of ``model``: modelled cost of one call, structured vs dense, at its rows.

    Rows per call are ``batch_size`` unless ``example_shape`` (one example's input shape, without the batch
    dimension) is given, in which case one forward on ``(batch_size, *example_shape)`` records each layer's
    real number of rows (e.g. batch x pixels for 1x1 convolutions, batch x steps for recurrent cells).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    calls = {}
    if example_shape is not None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        calls = _record_input_shapes(model, torch.zeros((batch_size, *example_shape), device=device))
    decisions = []
    for name, m in model.named_modules():
        if not is_freezable(m):
            continue
        shapes = calls.get(m, [(batch_size, m.in_features)])
        structured = sum(cost_model.estimate(layer_cost(m, s)) for s in shapes)
        dense = sum(cost_model.estimate(linear_cost(m.in_features, m.out_features, _rows(s, m.in_features),
                                                    m.bias is not None)) for s in shapes)
        decisions.append(Decision(name, _rows(shapes[0], m.in_features), structured, dense))
    return decisions


def for_inference(model: nn.Module, batch_size: int, cost_model: CostModel = DEFAULT_COST_MODEL,
                  example_shape=None) -> nn.Module:
    """A copy of ``model`` in eval mode where every freezable layer that the cost model finds cheaper as a
    dense matrix at ``batch_size`` (see :func:`plan_inference`) is replaced by :func:`freeze` of it.

    Outputs equal the original's up to floating-point rounding. ``model`` itself is left untouched.
    """
    plan = {d.name: d.choice for d in plan_inference(model, batch_size, cost_model, example_shape)}
    out = copy.deepcopy(model).eval()
    if plan.get("") == "dense":
        return freeze(out)
    for name, choice in plan.items():
        if choice == "dense":
            parent_name, _, attr = name.rpartition(".")
            parent = out.get_submodule(parent_name)
            setattr(parent, attr, freeze(getattr(parent, attr)))
    return out
