"""docs/autodiff.md: every ```python block runs; every ```bash line is an `acdc ...` command the CLI parses;
every figure it shows exists."""
import re
import shlex
from pathlib import Path

import pytest

from torch_acdc.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "autodiff.md"
TEXT = DOC.read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, re.S)


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_blocks_run(code):
    exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})


def test_bash_blocks_are_acdc_commands():
    lines = [ln for block in _blocks("bash") for ln in block.splitlines() if ln.strip()]
    assert lines
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "acdc", line
        build_parser().parse_args(argv[1:])


def test_figures_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", TEXT)
    assert images
    for image in images:
        assert (DOC.parent / image).is_file(), image
