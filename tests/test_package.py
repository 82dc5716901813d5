"""The package as a newcomer meets it: imports alone, answers --version/--help without torch, explains bad
flags with the sub-command's name, names missing extras, and has an nn.Linear-shaped ACDC layer."""
import subprocess
import sys

import pytest
import torch
from torch import nn

HEAVY = ("matplotlib", "scipy", "sklearn", "sympy", "transformers")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_library_imports_alone():
    """import torch_acdc and every public name: no experiments, training harness, CLI or plotting."""
    code = f"""
import sys, torch
before = set(sys.modules)
import torch_acdc
from torch_acdc import *
new = set(sys.modules) - before
bad = sorted(m for m in new if m.split('.')[0] in {HEAVY!r} or m.startswith(('torch_acdc.experiments',
             'torch_acdc.training', 'torch_acdc.cli')) or (m == 'tqdm'))
print(bad)
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_version_and_help_answer_without_importing_torch():
    code = """
import sys
from torch_acdc.cli import main
for argv in (['--version'], ['--help']):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0
print('torch' in sys.modules)
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "acdc (torch-acdc)" in out and "build" in out and "compress" in out
    assert out.strip().splitlines()[-1] == "False"


def test_a_mistyped_flag_names_its_subcommand(capsys):
    from torch_acdc.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["cost", "--widht", "64"])
    assert stop.value.code == 2
    assert "acdc cost: error: unrecognized arguments: --widht" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expect", [(["bench", "--device", "cuda:7"], "available: auto, cpu"),
                                         (["bench", "--device", "potato"], "available: auto, cpu"),
                                         (["classify", "--activation", "relux"], "invalid choice: 'relux'"),
                                         (["charlm", "--permutation", "shuffle"], "invalid choice")])
def test_choice_flags_are_checked_at_parse_time(argv, expect, capsys):
    from torch_acdc.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert expect in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    from torch_acdc.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "(default: 256)" in out and "--threads" in out and "--device" in out


def test_missing_extra_is_named_in_one_line():
    from torch_acdc.cli.errors import describe

    assert describe(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")) == (
        "needs the 'experiments' extra (module 'matplotlib' is missing): pip install 'torch-acdc[experiments]'")
    assert "'hf' extra" in describe(ModuleNotFoundError("x", name="transformers.models"))


def test_busy_machine_hint(monkeypatch):
    import os

    from torch_acdc.cli.common import oversubscription_hint

    monkeypatch.delenv("ACDC_NO_BUSY_HINT", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    hint = oversubscription_hint(2)
    assert hint and "load average 6.0 on 2 cores" in hint and "--threads 1" in hint
    assert "expect slower steps" in oversubscription_hint(1)  # nothing smaller to suggest
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert oversubscription_hint(2) is None


@pytest.mark.parametrize("in_features,out_features", [(784, 10), (10, 784), (64, 64), (3, 1), (1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_acdc_linear_is_an_nn_linear_drop_in(in_features, out_features, bias):
    from torch_acdc import ACDCLinear

    ref = nn.Linear(in_features, out_features, bias=bias)
    layer = ACDCLinear(in_features, out_features, bias=bias)
    for shape in ((in_features,), (5, in_features), (2, 3, in_features)):
        x = torch.randn(*shape)
        assert layer(x).shape == ref(x).shape
    n = max(in_features, out_features)
    assert sum(p.numel() for p in layer.parameters()) == 2 * (2 + bias) * n
    assert (layer.bias is None) == (not bias)
    assert layer.to_dense().shape == ref.weight.shape
    assert "in_features" in repr(layer) and "depth=2" in repr(layer)
    x = torch.randn(4, in_features, dtype=torch.float64)
    layer64 = ACDCLinear(in_features, out_features, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer64(x), x @ layer64.to_dense().T + layer64(torch.zeros(1, in_features,
                                                                                                dtype=torch.float64)))


def test_acdc_with_nn_linears_call_shape_fails_loudly():
    from torch_acdc import ACDC, ACDCLinear

    with pytest.raises(TypeError, match=r"ACDCLinear\(784, 10\)"):
        ACDC(784, 10)
    with pytest.raises(TypeError, match="the third argument is bias"):
        ACDCLinear(784, 10, 4)


def test_ctrl_c_at_any_moment_exits_quietly(monkeypatch, capsys):
    """Ctrl-C during imports or a run: one line, exit status 130, no traceback."""
    import torch_acdc.cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    monkeypatch.setattr(sys, "argv", ["acdc", "cost", "--system-malloc"])
    with pytest.raises(SystemExit) as stop:
        cli.console_main()
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert err.strip() == "acdc: interrupted" and "Traceback" not in err
