"""benchmarks/gpu_suite.py on a CPU: its arguments, skipping without CUDA, parts that fail or
run out of time without stopping the others, its data and figures, and the CPU fallbacks of
its measurement parts at tiny sizes (the CUDA-only parts skip)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def args_of(suite, tmp_path, *extra):
    return suite.parse_args(["--out", str(tmp_path / "out"), *extra])


# -- arguments ---------------------------------------------------------------------------------
def test_parts_are_checked_and_run_in_the_order_given(suite, tmp_path):
    # a short lease runs the part that matters most first, so the order given is kept
    assert args_of(suite, tmp_path).selected == list(suite.ORDER)
    assert args_of(suite, tmp_path, "--parts", "pack, train").selected == ["pack", "train"]
    assert args_of(suite, tmp_path).deadline == suite.DEADLINE
    assert args_of(suite, tmp_path, "--quick").deadline == 300


@pytest.mark.parametrize("parts", ["train,bogus", ",", "TRAIN"])
def test_an_unknown_part_is_one_line_and_exit_2(suite, tmp_path, capsys, parts):
    with pytest.raises(SystemExit) as stop:
        args_of(suite, tmp_path, "--parts", parts)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--parts: unknown part" in err and "choose from train, measure, oom, big, lock, pytest, pack" in err


def test_out_is_required(suite, capsys):
    with pytest.raises(SystemExit):
        suite.parse_args([])
    assert "--out" in capsys.readouterr().err


def test_without_cuda_it_says_skipped_and_exits_0(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert suite.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["status"] == "skipped: no CUDA" and report["parts"] == {}
    assert report["environment"]["cuda_available"] is False
    assert "skipped: no CUDA" in capsys.readouterr().out
    assert "skipped: no CUDA" in (tmp_path / "gpu_suite.log").read_text()


# -- the driver --------------------------------------------------------------------------------
def fake_parts(suite):
    def broken(rec, sizes, allow_cpu):
        rec.figure("before", 1)
        raise RuntimeError("boom\nsecond line")

    def good(rec, sizes, allow_cpu):
        rec.check("fine", True, 1.0, "<= 2")
        rec.summary("all good")

    def skip(rec, sizes, allow_cpu):
        raise suite.Skip("needs CUDA")

    def failing(rec, sizes, allow_cpu):
        rec.check("gap", False, {"gap": 0.3}, "gap <= 0.05")

    return {"train": broken, "measure": good, "oom": skip, "big": failing}


def test_a_failing_part_does_not_stop_the_others(suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "PARTS", fake_parts(suite))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = args_of(suite, tmp_path, "--cpu", "--in-process", "--parts", "train,measure,oom,big")
    report = suite.run_suite(args)
    parts = report["parts"]
    assert [parts[p]["status"] for p in ("train", "measure", "oom", "big")] == [
        "error", "ok", "skipped: needs CUDA", "fail"]
    assert parts["train"]["error"] == "RuntimeError: boom second line"
    assert parts["measure"]["summary"] == "all good"
    assert report["failed_checks"] == ["big.gap"]
    assert report["status"] == "ran"
    on_disk = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    assert on_disk["parts"].keys() == parts.keys() and on_disk["failed_checks"] == ["big.gap"]
    out = capsys.readouterr().out
    table = out[out.index("part     status"):out.index("wrote ")]
    assert "FAILED big.gap: gap 0.3 (want gap <= 0.05)" in table
    assert "total" in table and max(len(line) for line in table.splitlines()) <= 140


def test_parts_past_the_deadline_are_skipped(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []

    def runner(name, args, limit, log):
        calls.append((name, limit))
        return {"summary": "ran"}

    # a part starts while 0.6 of its budget (quick: 40 s) is left, and is killed at the deadline
    args = args_of(suite, tmp_path, "--cpu", "--quick", "--parts", "train,measure", "--deadline", "30")
    suite.run_suite(args, runner=runner)
    assert [name for name, _ in calls] == ["train", "measure"]
    assert all(25 < limit <= 30 for _, limit in calls)
    args = args_of(suite, tmp_path, "--cpu", "--quick", "--parts", "train,measure", "--deadline", "20")
    report = suite.run_suite(args, runner=runner)
    assert len(calls) == 2
    assert all(p["status"].startswith("skipped: out of time") for p in report["parts"].values())
    args = args_of(suite, tmp_path, "--cpu", "--quick", "--parts", "train", "--deadline", "20", "--budget-scale", "0.5")
    suite.run_suite(args, runner=runner)
    assert calls[-1] == ("train", pytest.approx(20, abs=1))


def test_a_part_over_its_limit_is_killed_with_its_children(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the part's trainers name folders under it
    args = args_of(suite, tmp_path, "--cpu", "--quick")
    args.out.mkdir(parents=True)
    data = suite.run_child("lock", args, 8.0, args.out / "gpu_suite.log")  # starts trainer processes
    if "error" in data:  # else the machine was quick enough to finish the part within 8 s
        assert data["error"].startswith("timed out after 8 s")
    left = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert left == []


# -- data and figures --------------------------------------------------------------------------
def test_learnable_images_are_deterministic_balanced_and_learnable(suite):
    x, y, templates = suite.learnable_images(600, seed=3)
    assert x.shape == (600, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [60] * 10
    again, _, _ = suite.learnable_images(600, seed=3)
    assert np.array_equal(x, again)
    # The class can be read off an image: the best of the templates (at any of its shifts)
    # matches the label far above chance (10 %); random images (nas's synthetic set) do not.
    centred = x.astype(np.float32) - 128
    shifts = [templates[:, :, dy:dy + 32, dx:dx + 32] for dy in range(0, 9, 2) for dx in range(0, 9, 2)]
    scores = np.max([np.einsum("nchw,kchw->nk", centred, t) for t in shifts], axis=0)
    assert (scores.argmax(1) == y).mean() > 0.6
    noise = np.random.default_rng(0).integers(0, 256, x.shape).astype(np.float32) - 128
    scores = np.max([np.einsum("nchw,kchw->nk", noise, t) for t in shifts], axis=0)
    assert (scores.argmax(1) == y).mean() < 0.2


def test_as_dataset_splits_and_normalises(suite):
    x, y, _ = suite.learnable_images(100)
    data = suite.as_dataset(x, y, 80, num_classes=10)
    assert (len(data.train), len(data.val), data.num_classes, data.hflip) == (80, 20, 10, True)
    assert all(0.3 < m < 0.7 for m in data.mean) and all(s > 0 for s in data.std)


def test_figures(suite):
    assert suite.spread([1.0, 1.02, 0.99, 1.01, 1.0]) == pytest.approx(0.03)
    assert suite.spread([2.0, 2.0]) == 0.0
    assert suite.relative_gap(1.1, 1.0) == pytest.approx(0.1)
    assert suite.max_overlap([(0, 2), (1, 3), (2.5, 4), (5, 6)]) == 2
    assert suite.max_overlap([(0, 10)] * 8) == 8
    assert suite.max_overlap([]) == 0
    assert suite.per_hour(16, 60.0) == 960.0 and suite.per_hour(3, 0.0) == 0.0


def test_recorder_saves_on_every_change(suite, tmp_path):
    rec = suite.Recorder(tmp_path / "part.json")
    rec.figure("s", float("inf"))
    rec.check("c", False, 0.5, "<= 0.1")
    saved = json.loads((tmp_path / "part.json").read_text())
    assert saved["figures"] == {"s": "inf"}
    assert saved["checks"] == {"c": {"ok": False, "value": 0.5, "limit": "<= 0.1"}}


def test_plain_loop_runs_float32_nchw_or_as_the_trainer_does(suite):
    from trainer_vs_plain import plain_train

    from nas.train import ProxyConfig

    x, y, _ = suite.learnable_images(96, resolution=16)
    data = suite.as_dataset(x, y, 64, num_classes=10)
    config = ProxyConfig(epochs=1, resolution=16, batch_size=32)
    cpu = torch.device("cpu")
    default = plain_train(suite.build(suite.TINY, 10), data, config, cpu)
    assert (default["dtype"], default["channels_last"]) == ("float32", False)  # on a CPU, as nas.train
    forced = plain_train(suite.build(suite.TINY, 10), data, config, cpu, bfloat16=True, channels_last=True)
    assert (forced["dtype"], forced["channels_last"]) == ("bfloat16", True)
    assert 0 <= forced["accuracy"] <= 1 and forced["images_per_second"] > 0


# -- the CPU fallbacks, for real, at tiny sizes --------------------------------------------------
def test_measure_part_cpu_fallback(suite):
    rec = suite.Recorder(None)
    suite.part_measure(rec, suite.Sizes(quick=True), True)
    figures, checks = rec.data["figures"], rec.data["checks"]
    for label in ("b0", "tiny"):
        rows = figures[f"{label}_measurements"]
        assert len(rows) == 5 and all(r["exclusive"] and r["peak_memory_mib"] is None for r in rows)
        assert set(figures[f"{label}_epoch"]) >= {"trainer_default", "cudnn_benchmark", "S_ms"}
        assert {f"{label}_spread_of_medians", f"{label}_S_vs_epoch", f"{label}_exclusive"} <= set(checks)
    assert checks["lock_file"]["ok"], figures["lock_files"]
    assert rec.data["summary"].startswith("b0 S ")


def test_script_runs_a_part_in_a_child_and_reports(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--cpu", "--quick", "--parts", "big,oom"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["status"] == "ran" and list(report["parts"]) == ["big", "oom"]
    assert report["parts"]["oom"]["status"] == "skipped: needs CUDA"
    big = report["parts"]["big"]
    assert big["status"] == "ok", big
    assert big["figures"]["b0"]["images_per_second"] > 0
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("wrote ") and any(line.startswith("big      ok") for line in lines)
    assert "----- big -----" in (out / "gpu_suite.log").read_text()
