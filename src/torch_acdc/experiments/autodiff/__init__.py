"""``acdc autodiff``: what a derivative costs on our layers (reverse / forward mode, finite differences,
symbolic differentiation, matrix-level derivatives). See docs/autodiff.md."""
from .run import FAST, FULL, PARTS, resolve_settings, run_autodiff

__all__ = ["FAST", "FULL", "PARTS", "resolve_settings", "run_autodiff"]
