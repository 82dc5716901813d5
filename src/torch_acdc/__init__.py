"""torch-acdc: ACDC structured efficient linear layers (Moczulski et al., arXiv 1511.05946) for PyTorch.

Public names load on first use (PEP 562): ``import torch_acdc`` itself imports nothing heavy, and the library
never imports its experiments, training harness, command line, progress bars or plotting.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.2.0"

_EXPORTS = {
    "dct": "transform", "idct": "transform", "dct_matrix": "transform",
    "acdc": "functional", "acdc_reference": "functional",
    "ACDC": "layers", "ACDCLinear": "layers", "StackedACDC": "layers",
    "afdf": "afdf", "afdf_reference": "afdf", "AFDF": "afdf", "StackedAFDF": "afdf",
    "ACDCConv2d": "conv", "ACDCSeparableConv2d": "conv",
    "ACDCLSTM": "recurrent", "ACDCLSTMCell": "recurrent",
    "convert": "conversion", "ConversionReport": "conversion",
    "explain": "dispatch",
}
_SUBMODULES = ("afdf", "compile_ops", "conv", "conversion", "cost", "dct_compat", "derivatives", "dispatch", "files",
               "fit", "functional", "layers", "markdown", "memory", "native", "passes", "permutations", "progress",
               "recipe", "recurrent", "tables", "transform")

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(sys.modules.get(f"{__name__}.{_EXPORTS[name]}")
                        or importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'torch_acdc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


class _Package(types.ModuleType):
    """``torch_acdc.afdf`` is the function (as it always was), although a submodule of that name exists: the
    import system's binding of the submodule onto the package is not allowed to replace the public name."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable through sys.modules / ``from torch_acdc.afdf import ...``
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
