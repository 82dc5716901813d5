"""`.ci/run` runs exactly the README's test command, so the documented set-up is the one CI proves."""
import re

from docs_blocks import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in re.findall(r"^python3 -m venv .*pytest.*$", readme, re.M)]
    assert len(commands) == 1, commands
    assert commands[0] in (ROOT / ".ci" / "run").read_text().splitlines()
