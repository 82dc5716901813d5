import pytest
import torch
from torch import nn

from torch_acdc import ACDC, StackedACDC
from torch_acdc.recipe import param_groups


def test_groups_split_diagonals_from_dense_weights():
    model = nn.Sequential(nn.Linear(8, 16), StackedACDC(16, 16, 3), nn.ReLU(), ACDC(16), nn.Linear(16, 2))
    groups = {g["name"]: g for g in param_groups(model, lr=0.01, weight_decay=1e-4)}
    assert set(groups) == {"acdc_A", "acdc_D", "other"}
    assert groups["acdc_A"]["lr"] == pytest.approx(0.24) and groups["acdc_D"]["lr"] == pytest.approx(0.12)
    assert groups["acdc_A"]["weight_decay"] == 0 and groups["other"]["weight_decay"] == 1e-4
    assert {id(p) for p in groups["acdc_A"]["params"]} == {id(model[1].a), id(model[3].a)}
    n_all = sum(len(g["params"]) for g in groups.values())
    assert n_all == len(list(model.parameters()))
    # the groups drive a real optimizer: the diagonals are not decayed
    opt = torch.optim.SGD(list(groups.values()), lr=0.01)
    before = model[3].a.detach().clone()
    opt.step()  # no gradients: nothing moves
    assert torch.equal(before, model[3].a)


def test_frozen_parameters_are_left_out_and_bad_multiplier_names():
    model = nn.Sequential(ACDC(4), nn.Linear(4, 4))
    model[1].weight.requires_grad_(False)
    groups = param_groups(model, lr=1.0, lr_multipliers={"A": 2, "D": 3})
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) - 1
    with pytest.raises(ValueError, match="no learning-rate multiplier"):
        param_groups(model, lr=1.0, lr_multipliers={"A": 2})
