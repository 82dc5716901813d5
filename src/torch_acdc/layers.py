"""ACDC layers as nn.Modules: one square layer (:class:`ACDC`) and a deep SELL (:class:`StackedACDC`).

Parameters per layer: diagonals ``a`` and ``d`` (and optionally a bias), O(n); compute O(n log n) per row.
"""
from __future__ import annotations

import abc
import operator
import weakref

import torch
from torch import nn
import torch.nn.functional as F

from . import dispatch, permutations, tables
from .functional import acdc, acdc_gathered, permute
from .transform import (SLOW_PRIME, check_float_input, compute_dtype, fast_length, largest_prime_factor,
                        makhoul_permutation, warn_if_slow_length)

__all__ = ["ACDC", "ACDCLinear", "StackedACDC", "stack_width", "DiagonalLayer", "DiagonalStack", "INITS", "init_diagonals_"]

INITS = ("paper", "identity", "uniform")
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}


def init_diagonals_(t: torch.Tensor, init: str) -> torch.Tensor:
    """In-place init of an ACDC diagonal: 'paper' N(1, 0.01^2), 'identity' ones, 'uniform' U(-1, 1)."""
    with torch.no_grad():
        if init == "paper":
            return t.normal_(1.0, 1e-2)
        if init == "identity":
            return t.fill_(1.0)
        if init == "uniform":
            return t.uniform_(-1.0, 1.0)
    raise ValueError(f"unknown init {init!r}: expected one of {INITS}")


def _reset_diagonals(module: nn.Module) -> None:
    """Shared reset_parameters of the diagonal layers: both diagonals by ``module.init``, bias to zero."""
    module.init_diagonal_(module.a, module.init)
    module.init_diagonal_(module.d, module.init)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _check_positive(name: str, value) -> int:
    """``value`` as a positive int: any integer type with ``__index__`` (numpy.int64, ...), never a bool."""
    try:
        index = operator.index(value)
    except TypeError:
        index = None
    if index is None or isinstance(value, bool) or index < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return index


def stack_width(in_features: int, out_features: int) -> int:
    """The width N a stack from ``in_features`` to ``out_features`` acts on: max(in, out), except that when
    in != out (the input is zero-padded anyway, so the width is free) a width with a prime factor above
    ``SLOW_PRIME`` is raised to the next fast FFT length (e.g. 4097 -> 4116)."""
    n = max(in_features, out_features)
    if in_features != out_features and largest_prime_factor(n) > SLOW_PRIME:
        return fast_length(n)
    return n


def _check_flag(who: str, name: str, value, hint: str = "") -> bool:
    """``value`` must be a bool (a positional integer in a flag's place is an argument mix-up, not a flag)."""
    if not isinstance(value, bool):
        raise TypeError(f"{who}: {name} must be True or False, got {value!r}{hint}")
    return value


def _check_features(x: torch.Tensor, expected: int, who: str) -> None:
    check_float_input(x, f"{who} input")
    if x.shape[-1] != expected:
        raise ValueError(f"{who} expected input with last dimension {expected}, got input of shape {tuple(x.shape)}")


class DiagonalLayer(nn.Module, abc.ABC):
    """Base of the square one-layer SELLs (:class:`ACDC`, :class:`torch_acdc.afdf.AFDF`).

    Subclasses set ``diagonal_shape`` (trailing shape of one diagonal entry: ``()`` real, ``(2,)`` a complex
    number as a real pair), ``init_diagonal_`` (in-place init of one diagonal tensor) and ``operator``
    (``fn(x, a, d, bias) -> y``). Parameters ``a``, ``d`` of shape (features, *diagonal_shape), ``bias``
    (features,) initialised to zero.
    """

    acdc_diagonals = {"a": "A", "d": "D"}  # for torch_acdc.recipe.param_groups
    diagonal_shape: tuple = ()
    init_diagonal_ = staticmethod(init_diagonals_)

    @staticmethod
    @abc.abstractmethod
    def operator(x: torch.Tensor, a: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The layer as a function: (..., features) -> (..., features)."""

    def __init__(self, features: int, bias: bool = True, init: str = "paper", device=None, dtype=None):
        super().__init__()
        features = _check_positive("features", features)
        name = type(self).__name__
        warn_if_slow_length(features, name)
        _check_flag(name, "bias", bias, f" ({name}({features}, {bias!r}) reads {bias!r} as the bias flag; a layer "
                                        f"from {features} to {bias!r} features with nn.Linear's signature is "
                                        f"ACDCLinear({features}, {bias!r})" if not isinstance(bias, bool) else "")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: expected one of {INITS}")
        kw = {"device": device, "dtype": dtype}
        self.in_features = self.out_features = features
        self.init = init
        self.a = nn.Parameter(torch.empty(features, *self.diagonal_shape, **kw))
        self.d = nn.Parameter(torch.empty(features, *self.diagonal_shape, **kw))
        self.bias = nn.Parameter(torch.empty(features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_diagonals(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._parameters  # (nn.Module.__getattr__ costs ~0.3 us per name: this is the per-call path)
        return self.operator(x, p["a"], p["d"], p["bias"])  # the operator checks x (and names the layer's op)

    def to_dense(self) -> torch.Tensor:
        """The effective (features x features) real matrix W with forward(x) = x @ W.T + bias."""
        eye = torch.eye(self.in_features, dtype=self.a.dtype, device=self.a.device)
        return self.operator(eye, self.a, self.d, None).T

    def extra_repr(self) -> str:
        return f"features={self.in_features}, bias={self.bias is not None}, init={self.init!r}"


class ACDC(DiagonalLayer):
    """One ACDC layer y = C^T diag(d) C diag(a) x + bias, C the orthonormal DCT-II.

    Input (..., features) -> output (..., features). 2n (+n bias) parameters, O(n log n) per row.
    ``init``: 'paper' (diagonals ~ N(1, 1e-2^2), the default), 'identity' or 'uniform' (U(-1, 1)).
    The bias is initialised to zero.
    """

    operator = staticmethod(acdc)


class DiagonalStack(nn.Module, abc.ABC):
    """Base of the deep SELLs (:class:`StackedACDC`, :class:`torch_acdc.afdf.StackedAFDF`).

    Owns everything but the layer itself: argument checks, zero-padding to N = max(in, out) and truncation,
    the parameters a, d (depth, N, *diagonal_shape) and bias (depth, N), the permutation buffer, bias /
    activation / shuffle between layers, ``to_dense`` and ``extra_repr``. Subclasses set ``diagonal_shape``,
    ``init_diagonal_``, ``layer(h, a_i, d_i)`` (one bias-free layer acting on the working order) and
    optionally ``working_order(n, dtype, device) -> (perm, iperm)``: the order the layers act in (None =
    natural order). Inputs are gathered into that order once; P^T of one layer, the shuffle and P of the
    next are fused into a single gather, handed to ``gathered_layer`` (which a subclass may fuse further).
    """

    acdc_diagonals = {"a": "A", "d": "D"}  # for torch_acdc.recipe.param_groups
    diagonal_shape: tuple = ()
    init_diagonal_ = staticmethod(init_diagonals_)

    def __init__(self, in_features: int, out_features: int, depth: int, permutation="random", activation=None,
                 bias: bool = True, init: str = "paper", device=None, dtype=None):
        super().__init__()
        in_features = _check_positive("in_features", in_features)
        out_features = _check_positive("out_features", out_features)
        depth = _check_positive("depth", depth)
        _check_flag(type(self).__name__, "bias", bias)
        permutations.check_kind(permutation)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: expected one of {INITS}")
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.depth = in_features, out_features, depth
        self.features = stack_width(in_features, out_features)
        if in_features == out_features:
            warn_if_slow_length(self.features, type(self).__name__)
        self.permutation, self.init = permutation, init
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}: expected one of {sorted(_ACTIVATIONS)}")
            activation = _ACTIVATIONS[activation]()
        self.activation = activation
        n = self.features
        self.a = nn.Parameter(torch.empty(depth, n, *self.diagonal_shape, **kw))
        self.d = nn.Parameter(torch.empty(depth, n, *self.diagonal_shape, **kw))
        self.bias = nn.Parameter(torch.empty(depth, n, **kw)) if bias else None
        perms = [permutations.make_permutation(permutation, n) for _ in range(depth - 1)]
        self.register_buffer("perms", torch.stack(perms) if perms else torch.empty(0, n, dtype=torch.long)
                             .to(device))
        if device is not None:
            self.perms = self.perms.to(device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_diagonals(self)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Refuse a ``perms`` buffer that is not ``depth - 1`` permutations of range(N) (load_state_dict
        raises naming the row) instead of loading it and giving wrong outputs later."""
        perms = state_dict.get(prefix + "perms")
        if perms is not None:
            problem = permutations.check_permutations(perms, self.depth - 1, self.features)
            if problem:
                error_msgs.append(f"{type(self).__name__} {prefix}perms: {problem}")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def working_order(self, n: int, dtype: torch.dtype, device: torch.device):
        """(perm, iperm) of the order the layers act in, or None for the natural order."""
        return None

    @abc.abstractmethod
    def layer(self, h: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """One bias-free layer on ``h`` (..., N) in the working order; a, d are one layer's diagonals."""

    def gathered_layer(self, h: torch.Tensor, a: torch.Tensor, d: torch.Tensor, gather_in, gather_out, bias,
                       param=None):
        """``G_out(layer(G_in(h)) + bias)`` with G = None or (idx, inverse idx) a gather of the last dimension
        and ``bias`` None or (N,); ``param`` None or (idx, inverse): the layer's a, d, bias are given in the
        natural order and act in the working order as a[idx] (a subclass whose operator fuses this, the
        gathers and the bias - StackedACDC - overrides this method).
        """
        if param is not None:
            a, d = a.index_select(0, param[0]), d.index_select(0, param[0])
            bias = None if bias is None else bias.index_select(0, param[0])
        if gather_in is not None:
            h = permute(h, *gather_in)
        h = self.layer(h, a, d)
        if bias is not None:
            h = h + bias
        return permute(h, *gather_out) if gather_out is not None else h

    def _forward(self, x: torch.Tensor, use_bias: bool) -> torch.Tensor:
        _check_features(x, self.in_features, type(self).__name__)
        if self.a.device != x.device:
            raise ValueError(f"{type(self).__name__} parameters are on {self.a.device}, the input on {x.device}: "
                             "move one of them (module.to(device))")
        ct = compute_dtype(torch.promote_types(x.dtype, self.a.dtype))
        n = self.features
        h = x if x.dtype == ct else x.to(ct)
        if n > self.in_features:
            h = F.pad(h, (0, n - self.in_features))
        order = self.working_order(n, ct, x.device)
        # one autograd node per parameter (unbind) instead of a select per layer and parameter
        a = (self.a if self.a.dtype == ct else self.a.to(ct)).unbind(0)
        d = (self.d if self.d.dtype == ct else self.d.to(ct)).unbind(0)
        b = None
        if use_bias and self.bias is not None:
            b = (self.bias if self.bias.dtype == ct else self.bias.to(ct)).unbind(0)
        gathers = self._between_gathers(order) if self.permutation is not None and self.depth > 1 else None
        pending = order  # the gather owed to the next layer's input
        for i in range(self.depth):
            last = i == self.depth - 1
            out_gather = (order[1], order[0]) if (last and order is not None) else None
            h = self.gathered_layer(h, a[i], d[i], pending, out_gather, None if b is None else b[i], order)
            pending = None
            if not last:
                if self.activation is not None:
                    h = self.activation(h)
                if gathers is not None:
                    pending = gathers[i]
        h = h[..., : self.out_features]
        return h if h.dtype == x.dtype else h.to(x.dtype)

    def _between_gathers(self, order) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(idx, inverse) of the gather between layer i and i + 1, for each i: v_next[j] = h_P[iperm[q[perm[j]]]]
        fuses P^T, the shuffle q and P of the next layer (order None: just q). Integer tensors only.

        Cached per module while the *same* ``perms`` tensor object (held by a weak reference: a new tensor at
        a freed address never matches) has the same version and storage, and the order is the same object.
        Building them costs ~10-20 us per layer, as much as a whole small layer call.
        """
        def build():
            problem = None if dispatch.tracing() else permutations.check_permutations(self.perms, self.depth - 1,
                                                                                    self.features)
            if problem:  # e.g. an in-place edit: the native gathers would read out of range
                raise ValueError(f"{type(self).__name__}.perms: {problem}")
            return [(idx, permutations.inverse(idx))
                    for idx in (q if order is None else order[1][q[order[0]]] for q in self.perms)]

        perms = self.perms
        if not dispatch.cache_allowed(perms):
            return build()
        key = (perms._version, perms.data_ptr(), perms.device, None if order is None else id(order[0]))
        cached = self.__dict__.get("_gathers")
        if cached is not None and cached[0]() is perms and cached[1] == key and (
                order is None or cached[2]() is order[0]):
            return cached[3]
        with tables.plain_mode():  # plain tensors whatever mode this call runs in (inference mode, ...)
            gathers = build()
        self.__dict__["_gathers"] = (weakref.ref(perms), key, (lambda: None) if order is None else weakref.ref(order[0]),
                                     gathers)
        return gathers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, use_bias=True)

    def to_dense(self) -> torch.Tensor:
        """The effective (out_features x in_features) matrix W with forward(x) = x @ W.T + forward(0).

        Exact for linear stacks; raises RuntimeError when the stack has an activation.
        """
        if self.activation is not None:
            raise RuntimeError(
                f"to_dense() needs a linear stack, but this {type(self).__name__} has activation "
                f"{self.activation}: its input-output map is not a matrix"
            )
        eye = torch.eye(self.in_features, dtype=self.a.dtype, device=self.a.device)
        return self._forward(eye, use_bias=False).T

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, depth={self.depth}, "
                f"permutation={self.permutation!r}, bias={self.bias is not None}, init={self.init!r}")


class StackedACDC(DiagonalStack):
    """A deep SELL: ``depth`` ACDC layers with a permutation (and optional activation) between layers.

    Input (..., in_features) -> output (..., out_features). Sizes: the layers act on
    N = stack_width(in, out) = max(in_features, out_features) (raised to a fast FFT length when in != out and
    it has a prime factor above 13); the input is zero-padded to N and the output truncated to
    out_features (no dense matrix anywhere). Between consecutive layers: the layer's bias, then
    ``activation`` (None, a name such as 'relu', or an nn.Module), then the permutation. Permutation kinds:
    'random' (fixed at construction from the torch RNG), 'riffle', or None; they are registered buffers
    (saved in state_dict). Parameters: a, d of shape (depth, N) and bias (depth, N): O(depth * N).
    Cost O(depth * N log N) per row; the layers act in Makhoul order, so the output of one layer, the
    shuffle and the input of the next are fused into a single gather.
    """

    def working_order(self, n: int, dtype: torch.dtype, device: torch.device):
        return makhoul_permutation(n, device)

    def layer(self, h: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return acdc_gathered(h, a, d)

    def gathered_layer(self, h, a, d, gather_in, gather_out, bias, param=None):
        return acdc_gathered(h, a, d, gather_in, gather_out, bias, param)  # all fused into the kernels


class ACDCLinear(StackedACDC):
    """An ACDC replacement for ``nn.Linear(in_features, out_features, bias=True)``: the same constructor and
    shapes, input (..., in_features) -> output (..., out_features), for any sizes.

    A linear stack of ``depth`` ACDC layers (default 2) acting on N = max(in_features, out_features) features
    (the input zero-padded to N, the output truncated), a random permutation between layers, each layer with
    diagonals a, d (N each) and, with ``bias=True``, a bias (N). Parameters: ``depth * (2 + bias) * N``
    (nn.Linear: ``in * out + out``); cost O(depth * N log N) per row. ``depth``, ``permutation``,
    ``activation`` and ``init`` are :class:`StackedACDC`'s.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, depth: int = 2,
                 permutation="random", activation=None, init: str = "paper", device=None, dtype=None):
        _check_flag("ACDCLinear", "bias", bias, " (the third argument is bias, as in nn.Linear; depth is a keyword)"
                    if not isinstance(bias, bool) else "")
        super().__init__(in_features, out_features, depth, permutation=permutation, activation=activation,
                         bias=bias, init=init, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"depth={self.depth}, permutation={self.permutation!r}, init={self.init!r}")
