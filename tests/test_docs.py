"""Every code block of README.md and docs/ runs as written, so the documentation cannot drift from the code.

python blocks are executed; bash blocks have every ``acdc`` command parsed by the real CLI parser, every
``python <script>`` checked to exist and every ``pip install ".[extra]"`` checked against pyproject.toml.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import matplotlib
import pytest

from docs_blocks import ROOT, acdc_argv, blocks, shell_commands
from torch_acdc.cli import build_parser

matplotlib.use("Agg", force=True)

PYTHON_BLOCKS = blocks("python")
BASH_BLOCKS = blocks("bash")


def test_the_docs_have_blocks_to_check():
    assert len(PYTHON_BLOCKS) >= 5 and len(BASH_BLOCKS) >= 5


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, block.id, "exec")
    exec(code, {"__name__": "__docs__"})


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project.get("optional-dependencies", {}))


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=lambda b: b.id)
def test_bash_block_commands_are_valid(block):
    parser = build_parser()
    for command in shell_commands(block.text):
        argv = acdc_argv(command)
        if argv is not None:
            try:
                parser.parse_args(argv)
            except SystemExit as exc:
                assert exc.code == 0, f"{block.id}: `acdc {' '.join(argv)}` is rejected by the parser"
            continue
        name = Path(command[0]).name
        if name.startswith("python") and len(command) > 1 and command[1].endswith(".py"):
            assert (ROOT / command[1]).is_file(), f"{block.id}: no script {command[1]}"
        if name == "pip" or command[:3] == [command[0], "-m", "pip"]:
            for word in command:
                for extra in re.findall(r"\[([\w,-]+)\]", word):
                    missing = set(extra.split(",")) - _extras()
                    assert not missing, f"{block.id}: pyproject.toml defines no extra {missing}"


def test_shell_splitting_finds_acdc_commands():
    text = "acdc bench --quick   # comment\nOMP_NUM_THREADS=1 torchrun --nproc_per_node=2 \\\n  -m torch_acdc.cli charlm --fast &\n"
    argvs = [acdc_argv(c) for c in shell_commands(text)]
    assert argvs == [["bench", "--quick"], ["charlm", "--fast"]]


def test_a_wrong_flag_in_a_doc_block_would_fail():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--no-such-flag"])
    assert exc.value.code != 0


def test_every_linked_file_exists():
    """Images and relative links in the README and docs point at files of the repository."""
    from docs_blocks import doc_files

    for path in doc_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"


def test_api_reference_is_in_sync_with_the_code():
    """docs/api.md lists every public name with its signature; regenerate with
    ``python tests/api_reference.py > docs/api.md`` after changing the API."""
    from api_reference import render

    assert (ROOT / "docs" / "api.md").read_text() == render(), "docs/api.md is stale: python tests/api_reference.py > docs/api.md"


def test_every_command_is_documented_in_the_cli_page():
    from torch_acdc.cli import COMMANDS

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in COMMANDS:
        assert f"acdc {name}" in text, f"docs/cli.md does not describe acdc {name}"
    for flag in ("--overwrite", "--threads", "--device", "--no-progress", "--fast", "--seed", "--out", "--debug"):
        assert flag in text, f"docs/cli.md does not describe {flag}"
