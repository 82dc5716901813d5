"""LSTMs whose gate transforms are ACDC stacks: :class:`ACDCLSTMCell` (one step) and :class:`ACDCLSTM` (layer).

Structure (per layer, as in the Torch char-rnn ACDC port): the dense ``W_ih x + W_hh h`` of an LSTM is replaced
by two *linear* ACDC stacks (the ReLU + permutation stacks of the paper did not train well in recurrence),

    gates = ih(x) + hh(h),   ih = StackedACDC(input_size, 4H, depth, bias=bias),
                             hh = StackedACDC(H, 4H, depth, bias=False),
    i, f, g, o = gates.chunk(4)      (nn.LSTM's gate order)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c').

A stack from k to 4H features zero-pads its input to N = max(k, 4H) (no dense matrix anywhere). Only ``hh`` is
inside the time loop: :class:`ACDCLSTM` applies ``ih`` to a whole sequence at once.

Parameters per layer with input size I (``b = 1`` with bias, else 0; each ACDC layer has diagonals a, d):

    depth * (2 + b) * max(I, 4H)  +  depth * 2 * 4H      = 20 * depth * H when I <= 4H and bias=True

against 4H * (I + H) + 8H for nn.LSTM. Cost per step and row: O(depth * H log H) against O(H * (I + H)).
"""
from __future__ import annotations

import torch
from torch import nn

from . import dispatch, native
from .layers import StackedACDC, _check_positive, stack_width
from .transform import makhoul_tables

__all__ = ["ACDCLSTMCell", "ACDCLSTM", "acdc_lstm_parameter_count"]

State = tuple[torch.Tensor, torch.Tensor]


def acdc_lstm_parameter_count(input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                              depth: int = 2) -> int:
    """Number of parameters of ``ACDCLSTM(input_size, hidden_size, num_layers, bias, depth=depth)``."""
    total = 0
    for layer in range(num_layers):
        k = input_size if layer == 0 else hidden_size
        total += depth * (2 + int(bias)) * stack_width(k, 4 * hidden_size) + depth * 2 * 4 * hidden_size
    return total


def _check_state_shape(t: torch.Tensor, expected: tuple[int, ...], which: str) -> None:
    if tuple(t.shape) != expected:
        raise RuntimeError(f"Expected {which} size {expected}, got {tuple(t.shape)}")


def _hidden_stack_gathers(hh: StackedACDC, dtype: torch.dtype, device: torch.device):
    """(perm, iperm, [input gather of each layer]) of the hidden stack: Makhoul's order into the first layer,
    the fused shuffle into the others (None without a permutation: the layers stay in Makhoul order)."""
    n = hh.features
    perm, iperm = hh.working_order(n, dtype, device)
    between = hh._between_gathers((perm, iperm)) if (hh.permutation is not None and hh.depth > 1) else None
    return perm, iperm, [perm] + [None if between is None else between[i][0] for i in range(hh.depth - 1)]


def _lstm_forward(hh: StackedACDC, xg, h0, c0, keep: bool, save: bool):
    """The native ``acdc_lstm_forward`` of the hidden stack ``hh``; returns (its outputs, gathers, tables)."""
    t = makhoul_tables(hh.features, xg.dtype, xg.device)
    perm, _iperm, gathers = _hidden_stack_gathers(hh, xg.dtype, xg.device)
    outputs = native.ops().acdc_lstm_forward(xg, h0, c0, hh.a, hh.d, gathers, perm, t.iperm, t.twiddle_pairs,
                                             keep, save)
    return outputs, gathers, t


class _Sequence(torch.autograd.Function):
    """One ACDC LSTM layer over a whole sequence with the native time loop (``acdc_lstm_forward`` /
    ``acdc_lstm_backward``): inputs x_gates (T, B, 4H) = ih(x), h0, c0 (B, H) or None, the hidden stack's
    a, d (depth, 4H); outputs h (T, B, H) and c (T, B, H) of every step. The backward is not differentiable
    again (double backward takes the step-by-step reference, see :func:`torch_acdc.dispatch.lstm_path`)."""

    @staticmethod
    def forward(ctx, xg, h0, c0, a, d, hh):
        save = any(ctx.needs_input_grad)
        (out, c_all, acts, inputs, spectra), gathers, t = _lstm_forward(hh, xg, h0, c0,
                                                                         save and dispatch.keep_spectrum(), save)
        if save:
            ctx.gathers, ctx.tables, ctx.counts = gathers, t, len(inputs)
            ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
            ctx.save_for_backward(c_all, acts, a, d, h0, c0, *inputs, *spectra)
        return out, c_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_c):
        c_all, acts, a, d, h0, c0, *rest = ctx.saved_tensors
        inputs, spectra = rest[:ctx.counts], rest[ctx.counts:]
        t = ctx.tables
        empty = acts.new_empty(0)
        grad_xg, grad_h0, grad_c0, grad_a, grad_d = native.ops().acdc_lstm_backward(
            empty if grad_h is None else grad_h, empty if grad_c is None else grad_c, h0, c0, c_all, acts, inputs,
            spectra, a, d, ctx.gathers, t.perm, t.twiddle_pairs, t.unpack, t.scale_sq)
        return (grad_xg, grad_h0 if ctx.has_h0 else None, grad_c0 if ctx.has_c0 else None, grad_a, grad_d, None)


def _sequence(cell: "ACDCLSTMCell", x_gates: torch.Tensor, state):
    """(h (T, B, H), c (T, B, H)) of ``cell`` over a sequence of precomputed input gates, by the path
    :func:`torch_acdc.dispatch.lstm_path` chooses: the native time loop, or None for the step-by-step loop."""
    hh = cell.hh
    h0, c0 = (None, None) if state is None else state
    if dispatch.lstm_path(hh, x_gates, h0, c0) != "native":
        return None
    if h0 is not None:
        h0, c0 = h0.contiguous(), c0.contiguous()
    r = dispatch.route(x_gates, h0, c0, hh.a, hh.d)
    if r == "inference":
        (out, c_all, *_), _, _ = _lstm_forward(hh, x_gates, h0, c0, keep=False, save=False)
        return out, c_all
    return _Sequence.apply(x_gates.contiguous(), h0, c0, hh.a, hh.d, hh)


class ACDCLSTMCell(nn.Module):
    """One LSTM step with ACDC gate transforms (see the module docstring for the maths and parameter count).

    ``forward(x, state=None) -> (h, c)``: x (B, input_size) or unbatched (input_size,); state ``(h, c)``
    each (B, hidden_size) (or (hidden_size,)), zeros when None: the contract of ``nn.LSTMCell``.
    ``init`` is the diagonal init of the stacks ('paper' by default; train with ``recipe.param_groups``).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, depth: int = 2,
                 permutation="random", device=None, dtype=None, init: str = "paper"):
        super().__init__()
        _check_positive("input_size", input_size)
        _check_positive("hidden_size", hidden_size)
        kw = {"depth": depth, "permutation": permutation, "init": init, "device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.depth, self.permutation, self.init = depth, permutation, init
        self.ih = StackedACDC(input_size, 4 * hidden_size, bias=bias, **kw)
        self.hh = StackedACDC(hidden_size, 4 * hidden_size, bias=False, **kw)

    def reset_parameters(self) -> None:
        self.ih.reset_parameters()
        self.hh.reset_parameters()

    def step(self, x_gates: torch.Tensor, state: State | None) -> State:
        """One step from precomputed input gates ``ih(x)`` (B, 4H) and a state (or None) -> (h, c)."""
        if state is None:  # hh(0) = 0: the stack has no bias
            gates = x_gates
            c = None
        else:
            h, c = state
            gates = x_gates + self.hh(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(i) * torch.tanh(g)
        if c is not None:
            c_new = c_new + torch.sigmoid(f) * c
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        if x.dim() not in (1, 2):
            raise RuntimeError(f"ACDCLSTMCell: Expected input to be 1D or 2D, got {x.dim()}D instead")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[-1]} expected {self.input_size}")
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
            state = None if state is None else (state[0].unsqueeze(0), state[1].unsqueeze(0))
        if state is not None:
            expected = (x.shape[0], self.hidden_size)
            _check_state_shape(state[0], expected, "hidden[0]")
            _check_state_shape(state[1], expected, "hidden[1]")
        h, c = self.step(self.ih(x), state)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.bias}, depth={self.depth}, "
                f"permutation={self.permutation!r}, init={self.init!r}")


class ACDCLSTM(nn.Module):
    """Multi-layer LSTM with ACDC gate transforms; a drop-in for ``nn.LSTM`` (unidirectional, no projections).

    ``forward(x, state=None) -> (output, (h_n, c_n))``: x (T, B, input_size), or (B, T, input_size) when
    ``batch_first``, or unbatched (T, input_size), or a ``PackedSequence`` (output packed alike, each
    sequence's h_n / c_n taken at its own last step); state ``(h_0, c_0)`` each (num_layers, B, hidden_size)
    (or (num_layers, hidden_size) unbatched), zeros when None. output (T, B, H) (or (B, T, H)): the top layer's
    h at every step; h_n, c_n the last step's state of every layer. ``dropout`` is applied to the outputs of
    every layer but the last, in training mode only. Each layer's input transform runs once over the whole
    sequence; the loop over time only applies the hidden transform. Parameters: see
    :func:`acdc_lstm_parameter_count`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, depth: int = 2, permutation="random",
                 device=None, dtype=None, init: str = "paper"):
        super().__init__()
        _check_positive("num_layers", num_layers)
        if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout <= 1):
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.depth, self.permutation, self.init = depth, permutation, init
        self.cells = nn.ModuleList(
            ACDCLSTMCell(input_size if layer == 0 else hidden_size, hidden_size, bias=bias, depth=depth,
                         permutation=permutation, device=device, dtype=dtype, init=init)
            for layer in range(num_layers)
        )

    def reset_parameters(self) -> None:
        for cell in self.cells:
            cell.reset_parameters()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3):
            raise RuntimeError(f"ACDCLSTM: Expected input to be 2D or 3D, got {x.dim()}D instead")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")

    def _forward_packed(self, packed, state: State | None):
        """nn.LSTM's PackedSequence contract: each sequence stops at its own length (its h_n, c_n are its last
        real step's), the output is packed like the input, and ``state`` / h_n are in the batch's original
        order. Runs the step loop with a per-row mask (padded steps leave the state unchanged)."""
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        x, lengths = pad_packed_sequence(packed)  # (T, B, I) in the original batch order
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")
        steps, batch = x.shape[0], x.shape[1]
        if state is not None:
            expected = (self.num_layers, batch, self.hidden_size)
            _check_state_shape(state[0], expected, "hidden[0]")
            _check_state_shape(state[1], expected, "hidden[1]")
        alive = (torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)).to(x.device).unsqueeze(-1)  # (T, B, 1)
        h_n, c_n, layer_input = [], [], x
        for layer, cell in enumerate(self.cells):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
            x_gates = cell.ih(layer_input)
            zeros = x.new_zeros(batch, self.hidden_size)
            h, c = (zeros, zeros) if state is None else (state[0][layer], state[1][layer])
            outputs = []
            for t in range(steps):
                h_new, c_new = cell.step(x_gates[t], (h, c))
                h, c = torch.where(alive[t], h_new, h), torch.where(alive[t], c_new, c)
                outputs.append(h_new * alive[t])
            h_n.append(h)
            c_n.append(c)
            layer_input = torch.stack(outputs)
        out = pack_padded_sequence(layer_input, lengths, enforce_sorted=False)
        return out, (torch.stack(h_n), torch.stack(c_n))

    def forward(self, x, state: State | None = None):
        from torch.nn.utils.rnn import PackedSequence

        if isinstance(x, PackedSequence):
            return self._forward_packed(x, state)
        self._check_input(x)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
            state = None if state is None else (state[0].unsqueeze(1), state[1].unsqueeze(1))
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if state is not None:
            expected = (self.num_layers, batch, self.hidden_size)
            _check_state_shape(state[0], expected, "hidden[0]")
            _check_state_shape(state[1], expected, "hidden[1]")
        h_n, c_n = [], []
        layer_input = x
        for layer, cell in enumerate(self.cells):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
            x_gates = cell.ih(layer_input)  # (T, B, 4H): the whole sequence in one call
            s = None if state is None else (state[0][layer], state[1][layer])
            native_run = _sequence(cell, x_gates, s) if steps > 0 else None
            if native_run is not None:  # the time loop in one native op (forward and backward)
                out, c_all = native_run
                h_n.append(out[-1])
                c_n.append(c_all[-1])
                layer_input = out
                continue
            outputs = []  # the step-by-step reference loop
            for t in range(steps):
                s = cell.step(x_gates[t], s)
                outputs.append(s[0])
            if s is None:  # empty sequence: the state passes through unchanged (zeros if none was given)
                zeros = x.new_zeros(batch, self.hidden_size)
                s = (zeros, zeros)
            h_n.append(s[0])
            c_n.append(s[1])
            layer_input = torch.stack(outputs) if outputs else x.new_zeros(0, batch, self.hidden_size)
        output, h_n, c_n = layer_input, torch.stack(h_n), torch.stack(c_n)
        if unbatched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (output.transpose(0, 1) if self.batch_first else output), (h_n, c_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + f", depth={self.depth}, permutation={self.permutation!r}, init={self.init!r}"
