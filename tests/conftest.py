"""Shared fixtures: the CLI runner and small, fast defaults for CPU runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # before torch loads; see nas/cli/__init__.py
import torch  # noqa: E402

# Two cores on CI: keep torch from oversubscribing when pytest runs subprocesses too.
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_ARCH = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 mb_r2_k3_s2_e4_c64_se0.25 head_c256"


def run_nas(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the ``nas`` command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode:
        raise AssertionError(f"nas {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def nas_json(*args: str, **kwargs) -> object:
    return json.loads(run_nas(*args, "--json", check=True, **kwargs).stdout)


@pytest.fixture
def nas_cli():
    return run_nas


@pytest.fixture(autouse=True, scope="session")
def _private_step_time_cache(tmp_path_factory):
    """Measured step times go to a per-session cache, never the user's (subprocesses inherit it)."""
    os.environ["NAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nas-cache"))
    yield


def ledger_of(run_dir) -> list[dict]:
    return json.loads(run_nas("trials", str(run_dir), "--json", check=True).stdout)


def finished(rows: list[dict]) -> list[dict]:
    """Distinct architectures evaluated: what counts toward `trials` (COMPLETE, PRUNED, or FAIL for the
    candidate's own reason; not repeats, not infeasible candidates, not interrupted trials)."""
    return [r for r in rows if r["duplicate_of"] is None and (r["state"] in ("COMPLETE", "PRUNED") or r["state"] == "FAIL"
            and str(r["reason"]).startswith(("diverged", "oom", "invalid")))]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """One small real search per test session (kept weights), shared by the analysis, report and export tests."""
    from pathlib import Path

    from nas.experiment import load_experiment
    from nas.search import run_search

    root = tmp_path_factory.mktemp("nas_tiny_run")
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
    exp = load_experiment(experiment, ["trials=4", "proxy.epochs=1", "proxy.resolution=8", "keep_weights=true"])
    run_search(exp, root / "run", fresh=True, log=lambda message: None)
    return root / "run"


def check_ledger(rows: list[dict], trials: int) -> None:
    """What `nas trials` must show after any search: the budget met, nothing left open, no re-training."""
    assert len(finished(rows)) == trials, [(r["number"], r["state"], r["reason"]) for r in rows]
    assert not [r for r in rows if r["state"] in ("RUNNING", "WAITING")]
    trained = [r["arch"] for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None]
    assert len(trained) == len(set(trained)), "an architecture was trained twice"
    for r in rows:
        if r["state"] == "COMPLETE":
            assert None not in (r["arch"], r["accuracy"], r["step_time"], r["params"], r["reward"]), r
