"""Run directories under faults and mistakes: nothing of anybody's is deleted, nothing is left wedged,
and every refusal is one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import check_ledger, ledger_of, run_nas

QUICK = "experiments/quickstart.yaml"
FAST = ["proxy.epochs=1", "proxy.resolution=8", "proxy.batch_size=64", "controller=random"]


def search(run_dir, *args, fresh=False):
    return run_nas("search", QUICK, *FAST, *args, "--run-dir", str(run_dir), *(["--fresh"] if fresh else []))


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_fresh_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "mine"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "keep.bin").write_text("precious")
    (folder / "study.db").write_text("db")
    line = one_line_error(search(folder, "trials=1", fresh=True))
    assert "is not a run directory of nas" in line and "choose another --run-dir" in line
    assert (folder / "weights" / "keep.bin").read_text() == "precious" and (folder / "study.db").read_text() == "db"
    line = one_line_error(search(folder, "trials=1"))  # without --fresh: refused as well, nothing written
    assert "is not a run directory of nas" in line and not (folder / "config.yaml").exists()


def test_a_run_without_its_config_is_not_wedged_by_another_experiment(tmp_path):
    run_dir = tmp_path / "run"
    assert search(run_dir, "trials=1", fresh=True).returncode == 0
    (run_dir / "config.yaml").unlink()
    line = one_line_error(search(run_dir, "trials=1", "space=efficientnet"))
    assert "was started with space 'tiny', now 'efficientnet'" in line
    assert not (run_dir / "config.yaml").exists()
    assert search(run_dir, "trials=2").returncode == 0  # the original experiment resumes
    check_ledger(ledger_of(run_dir), 2)
    assert (run_dir / "config.yaml").exists()


def test_an_override_never_rewrites_what_the_run_recorded(tmp_path):
    run_dir = tmp_path / "run"
    assert search(run_dir, "trials=1", fresh=True).returncode == 0
    before = (run_dir / "config.yaml").read_text()
    again = search(run_dir, "trials=1", "backend=simulated")
    assert again.returncode == 0 and "the budget of 1 distinct architectures is met; nothing to do" in again.stderr
    assert (run_dir / "config.yaml").read_text() == before


def test_unreachable_storage_is_one_line_and_poisons_nothing(tmp_path):
    run_dir = tmp_path / "run"
    line = one_line_error(search(run_dir, "trials=1", "storage=postgresql://nobody@127.0.0.1:1/x", fresh=True))
    assert line.startswith("nas search: error: storage postgresql://nobody@127.0.0.1:1/x: cannot open it")
    assert not (run_dir / "config.yaml").exists()
    assert search(run_dir, "trials=1", fresh=True).returncode == 0
    check_ledger(ledger_of(run_dir), 1)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_broken_study_is_one_line_and_fresh_recovers(tmp_path, damage):
    run_dir = tmp_path / "run"
    assert search(run_dir, "trials=1", fresh=True).returncode == 0
    db = run_dir / "study.db"
    for extra in ("study.db-wal", "study.db-shm"):
        (run_dir / extra).unlink(missing_ok=True)
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 2 if damage == "truncate" else 0)
    trials = run_nas("trials", str(run_dir))
    line = one_line_error(trials)
    assert str(run_dir) in line and ("--fresh" in line)
    resumed = search(run_dir, "trials=1")
    assert "--fresh" in one_line_error(resumed)
    assert search(run_dir, "trials=1", fresh=True).returncode == 0
    check_ledger(ledger_of(run_dir), 1)


def test_two_drivers_started_together_share_the_budget(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.cli", "search", QUICK, *FAST, "trials=3", "--run-dir", str(run_dir)]
    first = subprocess.Popen([*cmd, "--fresh"], stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    errors = [first.communicate(timeout=600)[1], second.communicate(timeout=600)[1]]
    assert not any("Traceback" in e for e in errors), errors
    check_ledger(ledger_of(run_dir), 3)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigterm_stops_the_driver_and_every_worker(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", QUICK, *FAST, "trials=6",
                             "workers=2", "--run-dir", str(run_dir), "--fresh"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    deadline = time.time() + 300
    while time.time() < deadline and not _workers_running(proc.pid):
        time.sleep(0.5)
    assert _workers_running(proc.pid)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    for _ in range(30):  # multiprocessing's resource tracker leaves once it sees the driver gone
        if not _group_alive(proc.pid):
            break
        time.sleep(1)
    assert not _group_alive(proc.pid), "a process of the search outlived SIGTERM by 30 s"
    rows = ledger_of(run_dir)
    assert not [r for r in rows if r["state"] == "RUNNING"]
    assert all(r["reason"].startswith("interrupted: stopped") for r in rows if r["state"] == "FAIL")
    assert search(run_dir, "trials=6", "workers=2").returncode == 0
    check_ledger(ledger_of(run_dir), 6)


def _workers_running(pid: int) -> bool:
    out = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    return len(out) >= 3  # the driver and its two workers


def _group_alive(pid: int) -> bool:
    return subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 0


def test_workers_beyond_the_cores_are_capped(tmp_path):
    run_dir = tmp_path / "run"
    proc = search(run_dir, "trials=2", "workers=100", fresh=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    cores = os.cpu_count()
    assert f"workers=100: this machine has {cores} CPU cores; running {cores} workers" in proc.stderr
    check_ledger(ledger_of(run_dir), 2)
