"""Convert an existing model: replace selected nn.Linear, nn.Conv2d and nn.LSTM modules by ACDC layers.

:func:`convert` swaps every selected ``nn.Linear(in, out)`` for a linear ``StackedACDC(in, out, depth)`` and
every selected ``nn.Conv2d`` (1x1 by default; k x k too with ``conv_kernel_sizes``) for an
:class:`~torch_acdc.conv.ACDCConv2d` of the same geometry (kernel size, stride, padding, dilation, padding
mode; k x k becomes depthwise k x k + ACDC mixer), keeping the original bias (in the last ACDC layer's bias).
The first convolution of the model stays dense unless ``keep_first_conv=False``. Optionally each replacement
is initialised by fitting the dense weight (:func:`torch_acdc.fit.fit_dense`; k x k: see :func:`convert`).
The :class:`ConversionReport` lists each replaced module with its parameters and multiply-adds before and
after, and the modules left alone with the reason.

Multiply-adds (per input row for Linear, per output pixel for a conv) come from the shared cost model
:func:`torch_acdc.cost.layer_cost`: dense ``in * out`` (x k_h k_w for a conv); a depth-k stack on
N = max(in, out) features ``k * (2 rFFTs of 2 N log2 N + ~7N elementwise)``, plus ``in * k_h * k_w`` for the
depthwise convolution of a k x k replacement.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .conv import ACDCConv2d
from .cost import conv2d_output_size, diagonal_stack_cost, layer_cost
from .markdown import format_table
from .fit import fit_dense, relative_error
from .layers import StackedACDC, stack_width
from .progress import progress_bar

__all__ = ["convert", "ConversionReport", "ReplacedModule", "separable_factors"]


@dataclass
class ReplacedModule:
    """One replaced module. ``madds_*`` per row (Linear) or output pixel (conv); ``rows`` the rows (or output
    pixels) it saw in the example forward pass (None without ``example_input``); ``fit_error`` the relative
    Frobenius error of the fitted replacement's dense weight (None without ``fit``)."""

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
    """'Linear', 'Conv2d 3x3', 'LSTM' etc., or None for modules convert() does not consider."""
    if isinstance(module, nn.Linear):
        return "Linear"
    if isinstance(module, nn.Conv2d):
        return "Conv2d {}x{}".format(*module.kernel_size)
    if type(module) is nn.LSTM:
        return "LSTM"
    return None


# Modules with dense weights that have no ACDC counterpart: listed as skipped, never silently passed over.
_NO_COUNTERPART = (nn.GRU, nn.RNN, nn.Embedding, nn.EmbeddingBag, nn.Bilinear, nn.MultiheadAttention, nn.Conv1d,
                   nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.LSTMCell, nn.GRUCell,
                   nn.RNNCell)


def _dense_lstm_params(m: nn.LSTM) -> int:
    return _count_params(m)


def _acdc_lstm_params(m: nn.LSTM, depth: int) -> int:
    from .recurrent import acdc_lstm_parameter_count

    return acdc_lstm_parameter_count(m.input_size, m.hidden_size, m.num_layers, m.bias, depth)


def _kernel_sizes(conv_kernel_sizes) -> set[tuple[int, int]]:
    try:
        sizes = {(k, k) if isinstance(k, int) else tuple(k) for k in conv_kernel_sizes}
    except TypeError:
        sizes = {None}
    if not all(isinstance(k, tuple) and len(k) == 2 and all(isinstance(v, int) and v >= 1 for v in k)
               for k in sizes):
        raise ValueError("conv_kernel_sizes must be an iterable of positive ints or (k_h, k_w) pairs, "
                         f"e.g. (1, 3), got {conv_kernel_sizes!r}")
    return sizes


def _replacement_params(module: nn.Module, depth: int) -> int:
    if isinstance(module, nn.LSTM):
        return _acdc_lstm_params(module, depth)
    in_f, out_f = _features(module)
    params = diagonal_stack_cost(stack_width(in_f, out_f), depth=depth, bias=module.bias is not None).params
    if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
        params += in_f * module.kernel_size[0] * module.kernel_size[1]  # the depthwise convolution
    return params


def _skip_reason(module: nn.Module, name: str, pattern: re.Pattern | None, min_features: int, depth: int,
                 kernel_sizes: set, first_conv: nn.Module | None, lstm: bool = True) -> str | None:
    """Why ``module`` (a Linear, Conv2d or LSTM) is not converted, or None when it is."""
    if pattern is not None and not pattern.search(name):
        return "name does not match pattern"
    if isinstance(module, nn.LSTM):
        if not lstm:
            return "LSTM kept (lstm=False)"
        if module.bidirectional:
            return "bidirectional LSTM (ACDCLSTM is unidirectional)"
        if module.proj_size:
            return f"LSTM with proj_size={module.proj_size} (ACDCLSTM has no projections)"
    if isinstance(module, nn.Conv2d):
        if module is first_conv:
            return "first convolution of the model (keep_first_conv=True)"
        if module.kernel_size not in kernel_sizes:
            return (f"kernel_size {module.kernel_size} not in conv_kernel_sizes "
                    f"{tuple(sorted(kernel_sizes))}")
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
    in_f, out_f = _features(module)
    if min(in_f, out_f) < min_features:
        return f"min(in, out) = {min(in_f, out_f)} < min_features = {min_features}"
    if _replacement_params(module, depth) >= _count_params(module):
        return "no parameter saving at this depth"
    return None


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.LSTM):
        return module.input_size, module.hidden_size
    return module.in_channels, module.out_channels


def _madds_per_row(module: nn.Module, original: nn.Module) -> float:
    """Multiply-adds of ``module`` (the original or its replacement) per input row of ``original`` (a
    Linear) or per output pixel (a Conv2d: one call on the smallest input, divided by its output pixels)."""
    if isinstance(original, nn.Linear):
        return layer_cost(module, (1, original.in_features)).mult_adds
    if isinstance(original, nn.LSTM):  # per time step and sequence: the gate transforms of every layer
        h, total = original.hidden_size, 0.0
        for layer in range(original.num_layers):
            k = original.input_size if layer == 0 else h
            if module is original:
                total += 4 * h * (k + h)
            else:
                total += (diagonal_stack_cost(stack_width(k, 4 * h), depth=module.depth).mult_adds
                          + diagonal_stack_cost(4 * h, depth=module.depth, bias=False).mult_adds)
        return total
    h, w = (d * (k - 1) + 1 for k, d in zip(original.kernel_size, original.dilation))
    out_h, out_w = conv2d_output_size(original, h, w)
    return layer_cost(module, (1, original.in_channels, h, w)).mult_adds / (out_h * out_w)


def separable_factors(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best separable approximation of a conv weight W (C_out, C_in, k_h, k_w) in the Frobenius norm:
    W[o, i] ~ P[o, i] K_i, from the leading singular pair of each input channel's (C_out, k_h k_w) slice.

    Returns the mixer P (C_out, C_in) and the depthwise weight K (C_in, 1, k_h, k_w) (unit-norm kernels).
    """
    out_c, in_c, kh, kw = weight.shape
    u, s, vh = torch.linalg.svd(weight.transpose(0, 1).reshape(in_c, out_c, kh * kw), full_matrices=False)
    return (u[:, :, 0] * s[:, :1]).T, vh[:, 0, :].reshape(in_c, 1, kh, kw)


def _build_replacement(module: nn.Module, depth: int, permutation, init: str, fit: bool, fit_kwargs: dict,
                       seed: int | None) -> tuple[nn.Module, float | None]:
    """The StackedACDC (Linear) or ACDCConv2d (Conv2d) replacing ``module``, its bias carried over, and the
    fit error (None without ``fit``). Fitting a k x k conv: :func:`separable_factors`, then the stack is
    fitted to the mixer P and the depthwise weight set to K."""
    if isinstance(module, nn.LSTM):
        return _lstm_replacement(module, depth, permutation, init, seed), None
    weight = module.weight.detach()
    is_conv = isinstance(module, nn.Conv2d)
    mixer, kernels = weight, None
    if is_conv:
        mixer = weight[:, :, 0, 0] if module.kernel_size == (1, 1) else None
        if fit and mixer is None:
            mixer, kernels = separable_factors(weight)
    has_bias = module.bias is not None
    with torch.random.fork_rng(devices=[weight.device] if weight.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        if fit:
            stack = fit_dense(mixer, depth, permutation, bias=has_bias, init=init, seed=seed, **fit_kwargs).module
        else:
            stack = StackedACDC(weight.shape[1], weight.shape[0], depth, permutation=permutation, bias=has_bias,
                                init=init, device=weight.device, dtype=weight.dtype)
        replacement = stack if not is_conv else ACDCConv2d.from_stack(
            stack, module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode)
    with torch.no_grad():
        if kernels is not None:
            replacement.depthwise.weight.copy_(kernels)
        if has_bias:
            stack.bias.zero_()
            stack.bias[-1, : weight.shape[0]] = module.bias.detach()
        error = None
        if fit:
            out_f = weight.shape[0]
            error = relative_error(replacement.to_dense().reshape(out_f, -1), weight.reshape(out_f, -1)).item()
    return replacement, error


def _lstm_replacement(module: nn.LSTM, depth: int, permutation, init: str, seed: int | None) -> nn.Module:
    """The ACDCLSTM with nn.LSTM's configuration; its input-stack bias starts at b_ih + b_hh (the dense
    gate biases), its diagonals at ``init`` (an LSTM is not fitted: its gates are not one matrix each)."""
    from .recurrent import ACDCLSTM

    p = next(module.parameters())
    with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        new = ACDCLSTM(module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
                       batch_first=module.batch_first, dropout=module.dropout, depth=depth, permutation=permutation,
                       init=init, device=p.device, dtype=p.dtype)
    if module.bias:
        with torch.no_grad():
            for layer, cell in enumerate(new.cells):
                b = getattr(module, f"bias_ih_l{layer}") + getattr(module, f"bias_hh_l{layer}")
                cell.ih.bias.zero_()
                cell.ih.bias[-1, : b.numel()] = b
    return new


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


def _first_conv(model: nn.Module) -> nn.Module | None:
    """The first nn.Conv2d / ACDCConv2d of ``model`` in registration (``named_modules``) order, or None."""
    return next((m for m in model.modules() if isinstance(m, (nn.Conv2d, ACDCConv2d))), None)


def convert(model: nn.Module, *, pattern: str | None = None, min_features: int = 64, depth: int = 2,
            conv_kernel_sizes=(1,), keep_first_conv: bool = True, lstm: bool = True, permutation="random",
            init: str = "paper",
            fit: bool = False, fit_steps: int = 100, fit_optimizer: str = "lbfgs", fit_lr: float | None = None,
            seed: int | None = None, inplace: bool = False, example_input=None,
            progress: bool = False) -> tuple[nn.Module, ConversionReport]:
    """Replace selected nn.Linear / nn.Conv2d / nn.LSTM modules of ``model`` by ACDC layers.

    Selection: modules whose qualified name matches the regex ``pattern`` (``re.search``; None = all), with
    ``min(in, out) >= min_features``, that would get fewer parameters. Convolutions also need a kernel size in
    ``conv_kernel_sizes`` (ints for square kernels or (k_h, k_w) pairs; default ``(1,)``, e.g. ``(1, 3)`` for
    3x3 too) and ``groups=1``; with ``keep_first_conv`` (default) the model's first convolution (registration
    order) stays dense (compressing the first convolution costs the most accuracy). Each Linear becomes a
    ``StackedACDC(in, out, depth, permutation, init=init)`` (zero-padding the input to max(in, out) and
    truncating the output), each conv an :class:`ACDCConv2d` of the same geometry around such a stack (k x k:
    a depthwise k x k conv first); the original bias is carried over. ``fit=True`` initialises each stack with
    ``fit_dense`` on the dense weight (``fit_optimizer`` 'lbfgs' (lr 1) or 'adam' (lr 1e-2) for ``fit_steps``
    steps); for a k x k conv the weight is first split by :func:`separable_factors` (per input channel, the
    best rank-1 (C_out) x (k_h k_w) factor), the stack fitted to the mixer and the depthwise weight set to the
    kernels; ``fit_error`` is then that of the whole (C_out, C_in, k_h, k_w) weight. ``seed`` makes the
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
    kernel_sizes = _kernel_sizes(conv_kernel_sizes)
    regex = re.compile(pattern) if pattern is not None else None
    model = model if inplace else copy.deepcopy(model)
    report = ConversionReport(model_params_before=_count_params(model))
    first_conv = _first_conv(model) if keep_first_conv else None
    inside_acdc = {id(m) for conv in model.modules() if isinstance(conv, ACDCConv2d) for m in conv.modules()}
    selected: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if id(module) in inside_acdc:  # e.g. an ACDCConv2d's own depthwise conv
            continue
        if _kind(module) is None:
            if isinstance(module, _NO_COUNTERPART):
                report.skipped.append((name, f"no ACDC counterpart for {type(module).__name__}"))
            continue
        reason = _skip_reason(module, name, regex, min_features, depth, kernel_sizes, first_conv, lstm)
        if reason is None:
            selected[name] = module
        else:
            report.skipped.append((name, reason))
    rows = (_count_rows(model, {k: m for k, m in selected.items() if not isinstance(m, nn.LSTM)}, example_input)
            if example_input is not None else {})
    fit_kwargs = {"steps": fit_steps, "optimizer": fit_optimizer,
                  "lr": fit_lr if fit_lr is not None else (1.0 if fit_optimizer == "lbfgs" else 1e-2)}
    new: dict[int, nn.Module] = {}
    for i, (name, module) in enumerate(progress_bar(selected.items(), desc="convert", enabled=progress)):
        replacement, error = _build_replacement(module, depth, permutation, init, fit, fit_kwargs,
                                                None if seed is None else seed + i)
        replacement.train(module.training)
        new[id(module)] = replacement
        in_f, out_f = _features(module)
        report.replaced.append(ReplacedModule(
            name=name, kind=_kind(module), in_features=in_f, out_features=out_f,
            params_before=_count_params(module), params_after=_count_params(replacement),
            madds_before=_madds_per_row(module, module), madds_after=_madds_per_row(replacement, module),
            rows=rows.get(name), fit_error=error))
    if id(model) in new:  # the model itself is a Linear / conv
        model = new[id(model)]
    else:
        _replace_children(model, new)
    report.model_params_after = _count_params(model)
    return model, report
