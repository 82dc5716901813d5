"""The ``acdc`` command line itself: common flags, no abbreviations, parse-time validation of every numeric flag,
the one --fast rule (explicit flags win), one-line errors with exit codes, --version / --help, a silent bench."""
import importlib
import re
from pathlib import Path

import pytest

from experiment_checks import read_results, run_command, single_threaded  # noqa: F401 (autouse)
from torch_acdc import __version__
from torch_acdc.cli import COMMANDS, build_parser, main
from torch_acdc.cli.common import COMMON_FLAGS, fill_presets


def parse(*argv):
    """Parse like ``main`` does (presets filled), without running."""
    args = build_parser().parse_args([str(a) for a in argv])
    return fill_presets(args, *args._presets)


def usage_error(capsys, *argv) -> str:
    """Run ``acdc *argv`` expecting a flag error: exit status 2 and exactly one stderr line, returned."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_the_common_flags_and_no_abbreviations(command, capsys):
    args = parse(command, "--seed", "3", "--out", "somewhere", "--fast", "--no-progress")
    assert (args.seed, args.out, args.fast, args.no_progress) == (3, "somewhere", True, True)
    assert parse(command).seed == 0 and not parse(command).fast
    help_text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    assert all(flag in help_text for flag in COMMON_FLAGS)
    assert "error: unrecognized arguments: --no-prog" in usage_error(capsys, command, "--no-prog")


def test_approx_seed_is_the_seed_not_the_number_of_seeds(capsys):
    args = parse("approx", "--seed", "7")
    assert args.seed == 7 and args.seeds == 5
    assert "unrecognized arguments: --see" in usage_error(capsys, "approx", "--see", "7")


BAD_NUMBERS = [
    ("classify", "--epochs", "0"), ("classify", "--seeds", "0"), ("classify", "--hidden", "0"),
    ("classify", "--limit-train", "0"), ("classify", "--limit-train", "-5"), ("classify", "--threads", "0"),
    ("classify", "--checkpoint-every", "0"), ("classify", "--lr", "nan"), ("classify", "--batch-size", "0"),
    ("classify", "--weight-decay", "-1"), ("classify", "--keep", "0"), ("classify", "--width", "x"),
    ("charlm", "--val-every", "0"), ("charlm", "--checkpoint-every", "0"), ("charlm", "--clip", "-1"),
    ("charlm", "--params", "0"), ("charlm", "--sample", "-5"), ("charlm", "--lr", "inf"),
    ("charlm", "--threads", "0"), ("charlm", "--val-fraction", "1"), ("charlm", "--dropout", "1"),
    ("charlm", "--temperature", "0"), ("charlm", "--hidden", "0"), ("charlm", "--steps", "-1"),
    ("approx", "--n", "0"), ("approx", "--depths", "0"), ("approx", "--seeds", "0"), ("approx", "--lr", "nan"),
    ("approx", "--steps", "0"), ("linear-problem", "--samples", "0"), ("linear-problem", "--lr", "-1"),
    ("linear-problem", "--lr-mult", "0"), ("lstm-bench", "--sizes", "0"), ("lstm-bench", "--time-budget", "0"),
    ("lstm-bench", "--max-memory-gb", "nan"), ("cost", "--widths", "0"), ("cost", "--repeats", "0"),
    ("bench", "--sizes", "-1"), ("bench", "--batch", "0"), ("bench", "--threads", "0"), ("bench", "--seed", "-1"),
]


@pytest.mark.parametrize("command,flag,value", BAD_NUMBERS)
def test_bad_numbers_are_refused_at_parse_time_in_one_line(command, flag, value, capsys):
    err = usage_error(capsys, command, flag, value)
    assert err.startswith(f"acdc {command}: error: argument {flag}: ")


FAST_CASES = [  # (command, explicit flag, its value, parsed, a preset flag left alone, its --fast value)
    ("approx", "--seeds", "3", 3, "steps", 40), ("linear-problem", "--steps", "7", 7, "n", 16),
    ("classify", "--epochs", "1", 1, "seeds", 1), ("lstm-bench", "--sizes", "8", [8], "steps", 3),
    ("charlm", "--steps", "9", 9, "hidden", 32), ("cost", "--widths", "32", [32], "batches", [1, 64]),
    ("bench", "--repeats", "2", 2, "sizes", [256, 1024]),
]


@pytest.mark.parametrize("command,flag,value,parsed,other,fast_value", FAST_CASES)
def test_explicit_flags_win_over_fast(command, flag, value, parsed, other, fast_value):
    module = importlib.import_module(COMMANDS[command])
    args = parse(command, "--fast", flag, value)
    assert getattr(args, flag[2:].replace("-", "_")) == parsed
    assert getattr(args, other) == fast_value
    assert getattr(parse(command), other) == module.FULL[other]  # without --fast: the full defaults


def test_bench_quick_is_fast():
    assert parse("bench", "--quick").sizes == [256, 1024]


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved during the test: {file name: (suptitle, axes)}."""
    from matplotlib.figure import Figure

    saved, original = {}, Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        saved[Path(path).name] = (fig._suptitle.get_text() if fig._suptitle else "", fig.axes)
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def assert_titled_and_distinguishable(title, axes, *, fast, seeds):
    assert ("--fast smoke run" if fast else "full run") in title and seeds in title
    assert "data: " in title and "protocol: " in title
    for ax in axes:
        styles = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in ax.get_lines()
                  if not line.get_label().startswith("_")]
        assert len(styles) == len(set(styles)), styles


def test_classify_fast_with_explicit_epochs_runs_those_epochs(tmp_path, figures):
    assert run_command("classify", "--fast", "--epochs", "1", "--models", "dense", "--no-progress",
                       "--out", tmp_path) == 0
    results = read_results(tmp_path)
    assert [len(h) for h in results["histories"]["dense"]] == [1]
    assert results["config"]["epochs"] == 1 and results["config"]["seeds"] == 1
    title, axes = figures["accuracy.png"]
    assert_titled_and_distinguishable(title, axes, fast=True, seeds="seed 0")
    assert "sklearn" in title and axes[0].xaxis.get_major_locator()._integer


PLOT_RUNS = [  # (argv, {png: seeds text}, fast)
    (["approx", "--n", "4", "--depths", "1", "2", "--seeds", "2", "--steps", "3", "--seed", "4"],
     {"error_vs_params.png": "seeds 4-5", "curves.png": "seeds 4-5"}, False),
    (["linear-problem", "--fast", "--n", "4", "--samples", "20", "--steps", "3", "--depths", "1", "2"],
     {"loss_curves.png": "seed 0"}, True),
    (["cost", "--fast", "--widths", "8", "--seed", "2"], {"crossover.png": "seed 2"}, True),
    (["lstm-bench", "--fast", "--sizes", "4", "--time-budget", "0.01"], {"lstm_scaling.png": "seed 0"}, True),
    (["charlm", "--fast", "--hidden", "8", "--embed", "4", "--batch", "2", "--bptt", "8", "--steps", "4",
      "--val-every", "2", "--max-chars", "3000", "--sample", "0"], {"curves.png": "seed 0"}, True),
]


@pytest.mark.parametrize("argv,pngs,fast", PLOT_RUNS, ids=[r[0][0] for r in PLOT_RUNS])
def test_every_plot_has_a_title_and_distinguishable_curves(argv, pngs, fast, tmp_path, figures):
    assert run_command(*argv, "--no-progress", "--out", tmp_path) == 0
    for png, seeds in pngs.items():
        assert (tmp_path / png).exists()
        assert_titled_and_distinguishable(*figures[png], fast=fast, seeds=seeds)


def test_library_errors_are_one_line_with_exit_1_and_a_traceback_on_request(tmp_path, capsys, monkeypatch):
    argv = ["approx", "--matrix", tmp_path / "missing.npy", "--out", tmp_path / "run", "--no-progress"]
    assert run_command(*argv) == 1
    err = capsys.readouterr().err
    assert err == f"acdc approx: error: No such file or directory: {tmp_path / 'missing.npy'}\n"
    with pytest.raises(FileNotFoundError):
        run_command("--debug", *argv)
    with pytest.raises(FileNotFoundError):
        run_command(*argv, "--debug")
    monkeypatch.setenv("ACDC_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_command(*argv)


def test_flag_combinations_are_usage_errors_with_exit_2(tmp_path, capsys):
    assert run_command("approx", "--protocol", "log", "--matrix", "m.npy", "--out", tmp_path) == 2
    assert capsys.readouterr().err == "acdc approx: error: --matrix applies to the matrix protocol only\n"


def test_unexpected_errors_are_one_line_naming_the_type(capsys, monkeypatch):
    import torch_acdc.cli.cost as cost_cli

    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cost_cli, "run", broken)
    assert main(["cost"]) == 1
    err = capsys.readouterr().err
    assert err == "acdc cost: error: RuntimeError: boom second line (internal error; rerun with --debug for the " \
                  "traceback)\n"


def test_version_and_help_list_every_command_with_a_summary(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"acdc (torch-acdc) {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M) or re.search(rf"^\s+{name}\n\s+\S", out, re.M), name
    assert "explicit" in out and "ACDC_DEBUG" in out and "exit status" in out


def test_bench_output_is_silent_apart_from_the_table_and_legend(tmp_path, capfd):
    assert run_command("bench", "--sizes", "16", "--batch", "2", "--depth", "1", "--repeats", "1",
                       "--no-progress", "--out", tmp_path) == 0
    out, err = capfd.readouterr()
    assert "USDT" not in out + err and "profiler" not in out + err and "CPUAllocator" not in out + err
    assert "f+b / 5 rfft = " in out and "Stack(d) = StackedACDC of depth d" in out
    assert read_results(tmp_path)["rows"][0]["acdc_peak_mb"] >= 0


def test_only_the_console_script_retains_freed_memory(monkeypatch, tmp_path):
    """The console script first asks glibc to keep freed memory (``--system-malloc`` opts out); ``main()``
    called from a host process never changes the host's allocator."""
    import sys

    from torch_acdc import cli, memory

    calls = []
    monkeypatch.setattr(memory, "retain_freed_memory", lambda: calls.append(1) or True)
    assert run_command("cost", "--widths", "64", "--out", tmp_path / "a", "--no-progress") == 0
    assert calls == []
    for extra, expected in (([], [1]), (["--system-malloc"], [1])):
        monkeypatch.setattr(sys, "argv", ["acdc", "cost", "--widths", "64", "--out", str(tmp_path / f"c{len(extra)}"),
                                          "--no-progress", *extra])
        with pytest.raises(SystemExit) as stop:
            cli.console_main()
        assert stop.value.code == 0 and calls == expected
