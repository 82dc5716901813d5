"""Convert an existing model: replace selected nn.Linear and 1x1 nn.Conv2d modules by ACDC stacks.

:func:`convert` swaps every selected ``nn.Linear(in, out)`` for a linear ``StackedACDC(in, out, depth)`` and
every selected 1x1 ``nn.Conv2d`` for an :class:`~torch_acdc.conv.ACDCConv2d` (same stride), keeping the
original bias (in the last ACDC layer's bias). Optionally each stack is initialised by fitting the dense weight
with :func:`torch_acdc.fit.fit_dense`. The :class:`ConversionReport` lists each replaced module with its
parameters and multiply-adds before and after, and the modules left alone with the reason.

Multiply-adds (per input row for Linear, per output pixel for a 1x1 conv) come from the shared cost model
:func:`torch_acdc.cost.layer_cost`: dense ``in * out``; a depth-k stack on N = max(in, out) features
``k * (2 rFFTs of 2 N log2 N + ~7N elementwise)``.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .conv import ACDCConv2d
from .cost import diagonal_stack_cost, layer_cost
from .experiments.common import format_table
from .fit import fit_dense
from .layers import StackedACDC

__all__ = ["convert", "ConversionReport", "ReplacedModule"]


@dataclass
class ReplacedModule:
    """One replaced module. ``madds_*`` per row (Linear) or output pixel (1x1 conv); ``rows`` the rows (or
    pixels) it saw in the example forward pass (None without ``example_input``); ``fit_error`` the relative
    Frobenius error of the fitted stack (None without ``fit``)."""

    name: str
    kind: str
    in_features: int
    out_features: int
    params_before: int
    params_after: int
    madds_before: float
    madds_after: float
    rows: int | None = None
    fit_error: float | None = None


@dataclass
class ConversionReport:
    """What :func:`convert` did: ``replaced`` modules, ``skipped`` candidates as (name, reason), and the
    parameter counts of the whole model before and after."""

    replaced: list[ReplacedModule] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model_params_before: int = 0
    model_params_after: int = 0

    def _sum(self, attr: str, per_forward: bool = False) -> float | None:
        if per_forward and any(r.rows is None for r in self.replaced):
            return None
        return sum(getattr(r, attr) * (r.rows if per_forward else 1) for r in self.replaced)

    @property
    def madds_per_forward(self) -> tuple[float, float] | None:
        """(before, after) multiply-adds of the replaced modules in the example forward pass, if one was given."""
        before = self._sum("madds_before", per_forward=True)
        return None if before is None else (before, self._sum("madds_after", per_forward=True))

    def table(self) -> str:
        """A Markdown table: one row per replaced module, then the totals."""
        rows = [{"module": r.name, "kind": r.kind, "in": r.in_features, "out": r.out_features,
                 "params": f"{r.params_before} -> {r.params_after}",
                 "madds/row": f"{r.madds_before:.0f} -> {r.madds_after:.0f}",
                 "fit error": "" if r.fit_error is None else f"{r.fit_error:.3g}"} for r in self.replaced]
        rows.append({"module": "**replaced total**", "kind": "", "in": "", "out": "",
                     "params": f"{self._sum('params_before')} -> {self._sum('params_after')}",
                     "madds/row": f"{self._sum('madds_before'):.0f} -> {self._sum('madds_after'):.0f}",
                     "fit error": ""})
        return format_table(rows)

    def summary(self) -> str:
        before, after = self.model_params_before, self.model_params_after
        text = (f"replaced {len(self.replaced)} module(s), skipped {len(self.skipped)}; model parameters "
                f"{before} -> {after} ({before / max(after, 1):.2f}x fewer)")
        if self.madds_per_forward is not None:
            mb, ma = self.madds_per_forward
            text += (f"; replaced modules' multiply-adds per forward {mb:.4g} -> {ma:.4g} "
                     f"({mb / max(ma, 1):.2f}x fewer)")
        return text

    def as_dict(self) -> dict:
        return {"replaced": [asdict(r) for r in self.replaced], "skipped": [list(s) for s in self.skipped],
                "model_params_before": self.model_params_before, "model_params_after": self.model_params_after,
                "madds_per_forward": self.madds_per_forward}

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _kind(module: nn.Module) -> str | None:
    """'Linear', 'Conv2d 1x1', or None for modules convert() does not consider."""
    if isinstance(module, nn.Linear):
        return "Linear"
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
        return "Conv2d 1x1"
    return None


def _skip_reason(module: nn.Module, name: str, pattern: re.Pattern | None, min_features: int,
                 depth: int) -> str | None:
    """Why ``module`` (a Linear or 1x1 conv) is not converted, or None when it is."""
    if pattern is not None and not pattern.search(name):
        return "name does not match pattern"
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
        if module.padding not in ((0, 0), "valid", "same"):
            return f"padded 1x1 convolution (padding={module.padding})"
    in_f, out_f = _features(module)
    if min(in_f, out_f) < min_features:
        return f"min(in, out) = {min(in_f, out_f)} < min_features = {min_features}"
    stack_params = diagonal_stack_cost(max(in_f, out_f), depth=depth, bias=module.bias is not None).params
    if stack_params >= _count_params(module):
        return "no parameter saving at this depth"
    return None


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def _madds_per_row(module: nn.Module, in_features: int) -> float:
    """Multiply-adds of one call on one row (Linear, StackedACDC) or one 1x1 pixel (Conv2d)."""
    shape = (1, in_features, 1, 1) if isinstance(module, nn.Conv2d) else (1, in_features)
    return layer_cost(module, shape).mult_adds


def _dense_weight(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    return w[:, :, 0, 0] if w.dim() == 4 else w


def _build_stack(module: nn.Module, depth: int, permutation, init: str, fit: bool, fit_kwargs: dict,
                 seed: int | None) -> tuple[StackedACDC, float | None]:
    weight = _dense_weight(module)
    has_bias = module.bias is not None
    if fit:
        result = fit_dense(weight, depth, permutation, bias=has_bias, init=init, seed=seed, **fit_kwargs)
        stack, error = result.module, result.error
    else:
        with torch.random.fork_rng(devices=[weight.device] if weight.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            stack = StackedACDC(weight.shape[1], weight.shape[0], depth, permutation=permutation, bias=has_bias,
                                init=init, device=weight.device, dtype=weight.dtype)
        error = None
    if has_bias:
        with torch.no_grad():
            stack.bias.zero_()
            stack.bias[-1, : weight.shape[0]] = module.bias.detach()
    return stack, error


def _count_rows(model: nn.Module, modules: dict[str, nn.Module], example_input) -> dict[str, int]:
    """Rows (Linear) / output pixels (conv) each module processes in one forward pass of ``example_input``."""
    rows = {name: 0 for name in modules}
    hooks = []
    for name, module in modules.items():
        def hook(mod, args, output, name=name):
            rows[name] += output.numel() // _features(mod)[1]
        hooks.append(module.register_forward_hook(hook))
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    return rows


def _replace_children(model: nn.Module, new: dict[int, nn.Module]) -> None:
    """Swap every reference to an old module (keyed by id) for its replacement, shared references included."""
    for parent in model.modules():
        for child_name, child in list(parent._modules.items()):  # not named_children(): it skips repeats
            if id(child) in new:
                setattr(parent, child_name, new[id(child)])


def convert(model: nn.Module, *, pattern: str | None = None, min_features: int = 64, depth: int = 2,
            permutation="random", init: str = "paper", fit: bool = False, fit_steps: int = 100,
            fit_optimizer: str = "lbfgs", fit_lr: float | None = None, seed: int | None = None,
            inplace: bool = False, example_input=None, progress: bool = False) -> tuple[nn.Module, ConversionReport]:
    """Replace selected nn.Linear / 1x1 nn.Conv2d modules of ``model`` by linear ACDC stacks.

    Selection: modules whose qualified name matches the regex ``pattern`` (``re.search``; None = all), with
    ``min(in, out) >= min_features``, that would get fewer parameters; grouped or padded 1x1 convolutions are
    left alone. Each replacement is a ``StackedACDC(in, out, depth, permutation, init=init)`` (zero-padding
    the input to max(in, out) and truncating the output), wrapped in :class:`ACDCConv2d` for convolutions,
    carrying the original bias. ``fit=True`` initialises each stack with ``fit_dense`` on the dense weight
    (``fit_optimizer`` 'lbfgs' (lr 1) or 'adam' (lr 1e-2) for ``fit_steps`` steps). ``seed`` makes the stacks'
    permutations and initialisations reproducible (module i uses seed + i) without touching the global RNG.
    ``example_input`` (a tensor or a tuple of forward arguments) runs one no-grad forward on the original
    model to count the rows each module sees, so the report gives multiply-adds per forward pass.

    Returns ``(converted model, report)``; the input model is copied first unless ``inplace``. Modules
    shared under several names are replaced everywhere by one stack. To reload a saved ``state_dict``,
    convert a fresh instance of the original model with the same selection settings and load into it.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if fit_optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"unknown fit_optimizer {fit_optimizer!r}: expected 'adam' or 'lbfgs'")
    regex = re.compile(pattern) if pattern is not None else None
    model = model if inplace else copy.deepcopy(model)
    report = ConversionReport(model_params_before=_count_params(model))
    selected: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if _kind(module) is None:
            continue
        reason = _skip_reason(module, name, regex, min_features, depth)
        if reason is None:
            selected[name] = module
        else:
            report.skipped.append((name, reason))
    rows = _count_rows(model, selected, example_input) if example_input is not None else {}
    fit_kwargs = {"steps": fit_steps, "optimizer": fit_optimizer,
                  "lr": fit_lr if fit_lr is not None else (1.0 if fit_optimizer == "lbfgs" else 1e-2)}
    new: dict[int, nn.Module] = {}
    for i, (name, module) in enumerate(tqdm(selected.items(), desc="convert", disable=not progress)):
        stack, error = _build_stack(module, depth, permutation, init, fit, fit_kwargs,
                                    None if seed is None else seed + i)
        replacement = ACDCConv2d.from_stack(stack, module.stride) if isinstance(module, nn.Conv2d) else stack
        replacement.train(module.training)
        new[id(module)] = replacement
        in_f, out_f = _features(module)
        report.replaced.append(ReplacedModule(
            name=name, kind=_kind(module), in_features=in_f, out_features=out_f,
            params_before=_count_params(module), params_after=_count_params(replacement),
            madds_before=_madds_per_row(module, in_f), madds_after=_madds_per_row(stack, in_f),
            rows=rows.get(name), fit_error=error))
    if id(model) in new:  # the model itself is a Linear / 1x1 conv
        model = new[id(model)]
    else:
        _replace_children(model, new)
    report.model_params_after = _count_params(model)
    return model, report
