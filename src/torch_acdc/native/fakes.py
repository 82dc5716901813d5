"""Fake (meta) kernels of the native ops, beside their schemas: shape propagation for torch.compile, export and
``torch.library.opcheck``. The schemas themselves are registered by the C++ sources (``csrc/cpu/*.cpp``,
``TORCH_LIBRARY`` blocks); each fake below repeats its schema in the docstring, and every op here has a
reference test against the pure-torch path (tests/test_oracle_chain.py).
"""
from __future__ import annotations

import torch

__all__ = ["register"]

_LIB = "torch_acdc_native::"
_registered = False


def _like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def register() -> None:
    """Register every fake once (after the library is loaded)."""
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake(_LIB + "acdc_forward")
    def _(x, a, d, b, param_idx, in_idx, out_idx, w, keep):
        """acdc_forward(x, a, d, b?, param_idx?, in_idx?, out_idx?, w, keep) -> (y, spectrum or empty)."""
        h = x.shape[-1] // 2 + 1
        spectrum = x.new_empty(*x.shape[:-1], h, dtype=x.dtype.to_complex()) if keep and x.numel() else x.new_empty(0)
        return _like(x), spectrum

    @torch.library.register_fake(_LIB + "acdc_backward")
    def _(grad_y, x, a, d, spectrum, param_idx, in_idx, out_inv, w, unpack, scale_sq, need_x, need_a, need_d,
          need_b):
        """acdc_backward(...) -> (grad_x, grad_a, grad_d, grad_b), each empty where not needed."""
        n = x.shape[-1]
        return (_like(x) if need_x else x.new_empty(0),
                *(x.new_empty(n) if need else x.new_empty(0) for need in (need_a, need_d, need_b)))

    @torch.library.register_fake(_LIB + "afdf_stack")
    def _(x, a):
        """afdf_stack(x, a) -> (..., 2, n)."""
        return x.new_empty(*x.shape[:-1], 2, x.shape[-1])

    @torch.library.register_fake(_LIB + "afdf_mix")
    def _(s, d):
        """afdf_mix(s, d) -> (..., h, 2)."""
        return s.new_empty(*s.shape[:-3], d.shape[0] // 2 + 1, 2)

    @torch.library.register_fake(_LIB + "afdf_grad_spectra")
    def _(g, d):
        """afdf_grad_spectra(g, d) -> (..., 2, h, 2)."""
        return g.new_empty(*g.shape[:-2], 2, d.shape[0] // 2 + 1, 2)

    @torch.library.register_fake(_LIB + "afdf_grad_spectra_sums_")
    def _(g, s, d, map):
        """afdf_grad_spectra_sums_(g, s!, d, map) -> grad_d (n, 2)."""
        return g.new_empty(d.shape[0], 2)

    @torch.library.register_fake(_LIB + "afdf_input_grads")
    def _(r, x, a, need_x, need_a):
        """afdf_input_grads(r, x, a, need_x, need_a) -> (grad_x, grad_a)."""
        return (_like(x) if need_x else x.new_empty(0), x.new_empty(a.shape[0], 2) if need_a else x.new_empty(0))
