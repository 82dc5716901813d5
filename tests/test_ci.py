"""`.ci/run` runs exactly the README's test command, so the documented set-up is the one CI proves."""
import re

import pytest

from docs_blocks import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in re.findall(r"^python3 -m venv .*pytest.*$", readme, re.M)]
    assert len(commands) == 1, commands
    assert commands[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_native_kernels_build_in_ci():
    """CI (``CI`` set, as .ci/run does) must build the native kernels: the native test files skip themselves
    when the build fails, and in CI that must be a failure instead."""
    import os

    from torch_acdc import native

    if not os.environ.get("CI"):
        pytest.skip("only enforced in CI")
    assert native.available(), native._state["error"]
