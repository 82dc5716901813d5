"""The paper's training recipe as optimizer parameter groups.

ACDC diagonals are initialised near 1 and learn best with larger step sizes and no weight decay (decay would
pull them towards 0, i.e. towards a rank-deficient operator). The paper used learning-rate multipliers of
x24 for A and x12 for D. Any module can declare its diagonals with a class attribute
``acdc_diagonals = {"a": "A", "d": "D"}`` (parameter name -> role); ACDC and StackedACDC do.

Example::

    groups = param_groups(model, lr=1e-3, weight_decay=5e-4)
    opt = torch.optim.SGD(groups, lr=1e-3, momentum=0.9)
"""
from __future__ import annotations

from torch import nn

__all__ = ["param_groups", "PAPER_LR_MULTIPLIERS"]

PAPER_LR_MULTIPLIERS = {"A": 24.0, "D": 12.0}


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 lr_multipliers: dict[str, float] | None = None) -> list[dict]:
    """Split ``model``'s trainable parameters into optimizer groups.

    Returns up to three groups: ``{"name": "acdc_A", "lr": lr * mult["A"], "weight_decay": 0}``,
    the same for D, and ``{"name": "other", "lr": lr, "weight_decay": weight_decay}`` for everything else
    (dense weights, biases). ``lr_multipliers`` defaults to :data:`PAPER_LR_MULTIPLIERS`; pass
    ``{"A": 1, "D": 1}`` to keep one learning rate and only drop the decay.
    """
    mult = dict(PAPER_LR_MULTIPLIERS if lr_multipliers is None else lr_multipliers)
    roles: dict[int, str] = {}
    for module in model.modules():
        for pname, role in getattr(type(module), "acdc_diagonals", {}).items():
            p = getattr(module, pname, None)
            if isinstance(p, nn.Parameter):
                if role not in mult:
                    raise ValueError(f"no learning-rate multiplier for diagonal role {role!r}; given {sorted(mult)}")
                roles[id(p)] = role
    buckets: dict[str, list] = {role: [] for role in mult}
    other = []
    for p in model.parameters():
        if p.requires_grad:
            (buckets[roles[id(p)]] if id(p) in roles else other).append(p)
    groups = [{"name": f"acdc_{role}", "params": ps, "lr": lr * mult[role], "weight_decay": 0.0}
              for role, ps in buckets.items() if ps]
    if other:
        groups.append({"name": "other", "params": other, "lr": lr, "weight_decay": weight_decay})
    return groups
