"""Shared by the experiment/fit/cost tests: single-threaded runs, in-process commands, results, plot checks."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from torch_acdc.cli import main


@pytest.fixture(autouse=True)
def single_threaded():
    """Import into a test module to run its tests on one intra-op thread: their tensors are tiny, so threads
    only add synchronisation overhead (several times slower on a busy 2-core machine). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_command(*argv) -> int:
    """``acdc *argv`` in this process."""
    return main([str(a) for a in argv])


def read_results(out: Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())


def assert_png(path: Path) -> None:
    """The file exists and is a complete, decodable PNG image of a plausible size."""
    path = Path(path)
    assert path.exists(), f"{path} missing"
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes the whole image: fails on truncated files
        assert img.width >= 200 and img.height >= 150
