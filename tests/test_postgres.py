"""PostgreSQL storage, on a real server started by the test (tests/pg.py): the same search,
and several drivers on one study (several hosts, each with its own run directory)."""
import os
import subprocess
import sys
import threading
import time

import optuna
import pytest

from conftest import check_ledger, ledger_of
from pg import postgres_server

QUICK = "experiments/quickstart.yaml"
FAST = ["proxy.epochs=1", "proxy.resolution=8", "proxy.batch_size=64", "controller=random"]


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def _search(run_dir, *overrides, fresh=False, tmpdir=None):
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", QUICK, *FAST, *overrides,
                             "--run-dir", str(run_dir), *(["--fresh"] if fresh else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "NAS_TORCH_THREADS": "1",
                                 # the device lock (nas.measure) private to this test, not shared with
                                 # other test sessions on this host (on CI nothing else runs)
                                 **({"TMPDIR": str(tmpdir)} if tmpdir else {})})


def test_storage_url_opens_with_psycopg3(pg_url):
    from nas.storage import open_storage

    storage = open_storage(pg_url)
    engine = storage.backend.engine
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


@pytest.mark.slow
def test_search_on_postgres_and_resume(pg_url, tmp_path):
    run = tmp_path / "run"
    proc = _search(run, "trials=2", "seed=4", f"storage={pg_url}", fresh=True, tmpdir=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    check_ledger(ledger_of(run), 2)
    # the same command with a larger budget resumes the study in PostgreSQL
    proc = _search(run, "trials=3", "seed=4", f"storage={pg_url}", tmpdir=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resuming" in out, out[-2000:]
    rows = ledger_of(run)
    check_ledger(rows, 3)
    assert rows[0]["baseline"] and len(rows) == 3


def test_the_ask_lock_holds_across_hosts(pg_url, tmp_path):
    """Two drivers with different run directories (two hosts) serialise asking in the database."""
    from nas.experiment import load_experiment
    from nas.run import Run
    from nas.search import prepare

    exp = load_experiment(QUICK, [*FAST, "trials=2", f"storage={pg_url}", "name=locktest"])
    runs = [Run(exp, tmp_path / name) for name in ("a", "b")]
    for run in runs:
        with prepare(run, fresh=False, log=lambda m: None):
            pass
    ledgers = [run.ledger() for run in runs]
    assert len(ledgers[0].study.get_trials()) == 1  # the baseline is enqueued once, not once per driver
    order = []

    def second():
        with ledgers[1].locked():
            order.append("b")

    with ledgers[0].locked():
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)
        order.append("a")  # b waits on the advisory lock although its run dir's file lock is free
    thread.join(30)
    assert order == ["a", "b"]


@pytest.mark.slow
def test_two_drivers_on_one_postgres_study(pg_url, tmp_path):
    """Two `nas search` processes (own run dirs, as on two hosts) on one study: exactly the budget."""
    trials = 4
    common = [f"trials={trials}", "seed=5", f"storage={pg_url}", "name=two_drivers"]
    procs = [_search(tmp_path / name, *common, tmpdir=tmp_path) for name in ("host_a", "host_b")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-1500:] for o in outs)
    rows = ledger_of(tmp_path / "host_a")
    assert [r["number"] for r in rows] == [r["number"] for r in ledger_of(tmp_path / "host_b")]  # one study
    check_ledger(rows, trials)
    assert len(rows) == trials, [(r["number"], r["state"], r["reason"]) for r in rows]  # no extra trial asked
    assert sum(r["baseline"] for r in rows) == 1
    study = optuna.load_study(study_name="two_drivers", storage=pg_url.replace("postgresql://", "postgresql+psycopg://"))
    workers = {t.user_attrs.get("worker") for t in study.get_trials()}
    assert len(workers) == 2, workers  # both drivers evaluated candidates
