"""Extract the code blocks of README.md and docs/*.md so tests can run them.

``python`` blocks are executed as written (each in a fresh namespace, from a scratch working directory).
``bash`` blocks are checked command by command: every ``acdc …`` / ``-m torch_acdc.cli …`` invocation is
parsed by the real argument parser (so a renamed or removed flag fails), ``python path/to/script.py`` must
name a file of the repository, and ``pip install`` lines must name extras that pyproject.toml defines.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(lang: str) -> list[Block]:
    """Every fenced block of language ``lang`` in the README and docs, with its file and first line."""
    found = []
    for path in doc_files():
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                found.append(Block(path, text.count("\n", 0, m.start()) + 2, lang, m.group(2)))
    return found


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, split on ``&&``/``;``/``|``."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:  # unbalanced quotes: report the line
            raise ValueError(f"cannot split shell line {line!r}: {exc}") from None
        current: list[str] = []
        for word in words + [";"]:
            if word in ("&&", ";", "|", "||", "&"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word.rstrip(";&"))
        # words glued to an operator ('cmd;' or 'cmd&') were stripped above
    return commands


ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def acdc_argv(command: list[str]) -> list[str] | None:
    """The argument list given to the ``acdc`` CLI by one shell command, or None if it does not call it."""
    words = [w for w in command]
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "acdc":
        return words[1:]
    if "-m" in words:
        i = words.index("-m")
        if i + 1 < len(words) and words[i + 1] == "torch_acdc.cli":
            return words[i + 2:]
    return None
