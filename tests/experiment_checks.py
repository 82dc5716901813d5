"""Checks shared by the experiment tests: run a command in-process, read its results, validate its plots."""
import json
from pathlib import Path

import torch
from PIL import Image

from torch_acdc.cli import main


def run_command(*argv) -> int:
    """``acdc *argv`` in this process, single-threaded (the fast modes' tensors are tiny: threads only add
    synchronisation overhead); the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)


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
