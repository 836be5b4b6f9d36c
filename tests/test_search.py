"""Searches end to end on the tiny space: the ledger, the baseline first, dedup, the budget under
faults (a killed worker, SIGKILL, Ctrl-C), several workers, resume, and bad experiment files."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import nas
from conftest import TINY_ARCH, check_ledger, finished, ledger_of, run_nas
from nas.experiment import ExperimentError, load_experiment
from nas.run import Run
from nas.runtime import RuntimeOptions
from nas.search import prepare, run_search
from nas.study import RunDir

QUICK = "experiments/quickstart.yaml"
FAST = ["proxy.epochs=1", "proxy.resolution=8", "proxy.batch_size=64"]


def fast_experiment(*overrides: str):
    return load_experiment(QUICK, [*FAST, *overrides])


def test_search_ledger(tmp_path):
    # every S measured afresh: the baseline trial must still record the S0 its reward divides by
    runtime = RuntimeOptions(cache_dir=tmp_path / "cache", use_cache=False)
    run_search(fast_experiment("trials=3", "controller=random", "seed=1"), tmp_path / "run", fresh=True,
               runtime=runtime, log=lambda m: None)
    rows = ledger_of(tmp_path / "run")
    assert len(rows) == 3 and len(finished(rows)) == 3
    assert rows[0]["baseline"] and rows[0]["arch"] == TINY_ARCH  # the space's baseline is trained first
    space = nas.load_space("tiny")
    for r in rows:
        assert r["state"] == "COMPLETE" and space.contains(r["arch"])
        assert 0 <= r["accuracy"] <= 1 and r["step_time"] > 0 and r["reward"] > 0
        assert r["params"] == nas.count_params(nas.parse_arch(r["arch"]), num_classes=10)
        assert r["step_time_p10"] <= r["step_time"] <= r["step_time_p90"] and r["device"].startswith("cpu")
        assert len(r["epoch_accuracies"]) == 1 and r["reason"] is None
    # the baseline is its own reference: S = S0 and P = P0, so its reward is its accuracy
    assert rows[0]["reward"] == pytest.approx(rows[0]["accuracy"], rel=1e-12)


def test_a_cache_filled_at_another_load_is_measured_afresh(tmp_path):
    import json

    from nas.measure import StepTime, StepTimeCache

    runtime = RuntimeOptions(cache_dir=tmp_path / "cache")
    exp = fast_experiment("trials=3", "controller=random", "seed=1")
    run_search(exp, tmp_path / "first", fresh=True, runtime=runtime, log=lambda m: None)
    path = tmp_path / "cache" / "step_times.json"
    cache = StepTimeCache(path)
    for row in ledger_of(tmp_path / "first"):  # as if the host had been 10x busier when they were measured
        slow = 10 * row["step_time"]
        cache.put(row["arch"], row["device"], StepTime(
            step_time=slow, step_time_p10=slow, step_time_p90=slow, device=row["device"], batch=exp.proxy.batch_size,
            resolution=exp.proxy.resolution, repeats=15, inference_latency=slow / 3, peak_memory=None,
            exclusive=True), num_classes=10)
    poisoned = {e["step_time"] for e in json.loads(path.read_text())["entries"].values()}
    lines: list[str] = []
    run_search(exp, tmp_path / "second", fresh=True, runtime=runtime, log=lines.append)
    assert any("filled at another load of this device" in line and "every S is measured afresh" in line
               for line in lines), lines
    opening = next(i for i, line in enumerate(lines) if line.startswith("estimate: about "))
    assert opening < lines.index(next(line for line in lines if line.startswith("trial 0:")))
    rows = ledger_of(tmp_path / "second")
    assert [r["arch"] for r in rows] == [r["arch"] for r in ledger_of(tmp_path / "first")]  # all in the cache
    assert not poisoned & {r["step_time"] for r in rows}  # none of them taken from it
    assert rows[0]["reward"] == pytest.approx(rows[0]["accuracy"], rel=1e-12)
    stored = json.loads(path.read_text())["entries"].values()
    assert not poisoned & {e["step_time"] for e in stored}  # the fresh figures replaced them


def test_same_seed_same_architectures(tmp_path):
    archs = []
    for name in ("a", "b"):
        exp = fast_experiment("trials=4", "controller=random", "seed=7", "proxy.epochs=1")
        # sampling only: a budget of 4 trials on a 1-epoch proxy
        run_search(exp, tmp_path / name, fresh=True, log=lambda m: None)
        archs.append([r["arch"] for r in ledger_of(tmp_path / name)])
    assert archs[0] == archs[1] and len(archs[0]) == 4


SPACE_OF_TWO = """name: two
baseline: stem_k3_s1_c8 fmb_r1_k3_s1_e1_c8 mb_r1_k3_s2_e1_c16 head_c32
stem: {channels: 8, stride: 1}
head: 32
stages:
  - {channels: 8, stride: 1, block: fused_mbconv, kernel: 3, expansion: 1, layers: 1}
  - {channels: 16, stride: 2, block: mbconv, kernel: [3, 5], expansion: 1, layers: 1}
"""


def test_interrupted_trials_do_not_use_up_the_budget(tmp_path):
    exp = fast_experiment("trials=2", "controller=random", "seed=2")
    run = Run(exp, tmp_path / "run")
    with prepare(run, fresh=True, log=lambda m: None) as ledger:
        # a worker that died mid-trial: RUNNING, owned by a pid that no longer exists
        ghost = ledger.ask()
        ledger.study._storage.set_trial_user_attr(ghost.trial_id, "worker", f"{os.uname().nodename}:999999999")
    run_search(exp, tmp_path / "run", log=lambda m: None)
    rows = ledger_of(tmp_path / "run")
    assert len(finished(rows)) == 2
    lost = [r for r in rows if r["state"] == "FAIL"]
    assert len(lost) == 1 and lost[0]["reason"].startswith("interrupted: worker")
    retried = [r for r in rows if r["retry_of"] == lost[0]["number"]]
    assert [r["arch"] for r in retried] == [ghost.arch] and retried[0]["state"] == "COMPLETE"


def _start_search(run_dir, *args):
    # SIGINT back to its default in the child, as a terminal's foreground job has it (a
    # non-interactive shell starts background jobs with SIGINT ignored)
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", QUICK, *FAST, *args, "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_complete(run_dir, proc, count, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        if not RunDir(run_dir).exists():
            continue
        try:
            study = RunDir(run_dir).load_study()
        except Exception:  # the study is being created
            continue
        if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= count:
            return True
    return False


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_search(run_dir, "trials=5", "controller=random", "seed=5", "--fresh")
    assert _wait_for_complete(run_dir, proc, 2), proc.stderr.read() if proc.poll() is not None else "timeout"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = run_nas("search", QUICK, *FAST, "trials=5", "controller=random", "seed=5", "--run-dir", str(run_dir))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = ledger_of(run_dir)
    assert len(finished(rows)) == 5
    assert not [r for r in rows if r["state"] in ("RUNNING", "WAITING")]
    trained = [r["arch"] for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None]
    assert len(trained) == len(set(trained))
    for lost in (r for r in rows if r["state"] == "FAIL"):
        assert lost["reason"].startswith("interrupted")
        assert any(r["retry_of"] == lost["number"] and r["arch"] == lost["arch"] for r in rows)


@pytest.mark.slow
def test_ctrl_c_is_a_clean_stop(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_search(run_dir, "trials=6", "controller=random", "seed=6", "--fresh")
    assert _wait_for_complete(run_dir, proc, 1)
    while proc.poll() is None:  # Ctrl-C while a candidate is being evaluated
        study = RunDir(run_dir).load_study()
        if any("arch" in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("nas: interrupted")
    study = RunDir(run_dir).load_study()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    rows = ledger_of(run_dir)
    stopped = [r for r in rows if r["state"] == "FAIL"]
    assert [r["reason"] for r in stopped] == ["interrupted: stopped by the user (Ctrl-C)"]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["arch"] for t in queued] == [stopped[0]["arch"]]  # it is queued again
    assert run_nas("search", QUICK, *FAST, "trials=6", "controller=random", "seed=6", "--run-dir",
                   str(run_dir)).returncode == 0
    check_ledger(ledger_of(run_dir), 6)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    run_search(fast_experiment("trials=5", "workers=2", "controller=random", "seed=3"), tmp_path / "run", fresh=True,
               log=lambda m: None)
    rows = ledger_of(tmp_path / "run")
    check_ledger(rows, 5)
    assert len({r["worker"].rpartition(":")[2] for r in rows}) == 2  # both worker processes evaluated


def test_resume_with_a_different_experiment_is_refused(tmp_path):
    run_search(fast_experiment("trials=1"), tmp_path / "run", fresh=True, log=lambda m: None)
    config = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ValueError, match="was started with proxy"):
        run_search(fast_experiment("trials=1", "proxy.epochs=2"), tmp_path / "run", log=lambda m: None)
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    run_search(fast_experiment("trials=2"), tmp_path / "run", log=lambda m: None)  # a bigger budget is fine
    assert len(finished(ledger_of(tmp_path / "run"))) == 2
    assert (tmp_path / "run" / "config.yaml").read_text() == config  # what the run recorded stays


@pytest.mark.parametrize("text, overrides, message", [
    ("name: x\nspace: tiny\ncolour: red\n", [], "colour: unknown key"),
    ("name: x\nspace: tiny\n", ["trials=0"], "trials: 0 must be a whole number >= 1"),
    ("name: x\nspace: tiny\n", ["controller=annealing"], "unknown controller 'annealing'"),
    ("name: x\nspace: tiny\ndataset: imagenette\n", [], "unknown dataset 'imagenette'"),
    ("name: x\nspace: nowhere.yaml\n", [], "space: nowhere.yaml: no such file"),
    ("name: x\nspace: tiny\nproxy: {epochs: 0}\n", [], "epochs"),
    ("name: x\nspace: tiny\nproxy: {wings: 2}\n", [], "proxy.wings: unknown key"),
    ("name: x\nspace: tiny\n", ["trials"], "override 'trials' must look like key=value"),
    ("name: x\nspace: tiny\n", ["pruner=sometimes"], "pruner: 'sometimes' not in"),
    ("- a\n- b\n", [], "an experiment must be a mapping"),
    ("name: [\n", [], "invalid YAML at line 2"),
    ("name: x\nspace: tiny\nreward: multi_objective\n", ["pruner=median"], "with reward multi_objective use mo_asha"),
    ("name: x\nspace: tiny\n", ["trials=40000"], "40000 is more than the 31,104 architectures of space 'tiny'"),
    ("name: x\nspace: tiny\n", ["constraints.colour=3"], "constraints.colour: unknown quantity"),
    ("name: x\nspace: tiny\n", ["constraints.params=big"], "constraints.params: 'big' must be a positive number"),
    ("name: ..\nspace: tiny\n", [], "name: '..' must be a plain name"),
    ("name: x\nspace: tiny\ndata_dir: nowhere\n", [], "data_dir: .*nowhere does not exist"),
])
def test_bad_experiment_files(tmp_path, text, overrides, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=message.replace("[", r"\[").replace("(", r"\(").replace(".*", "X")
                       .replace(".", r"\.").replace("X", ".*")):
        load_experiment(path, overrides)


def test_bad_experiment_on_the_command_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nspace: tiny\ncolour: red\n")
    r = run_nas("search", str(path), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"nas search: error: {path}: colour: unknown key (allowed: " + r.stderr.split("(allowed: ")[1].strip()
    assert not (tmp_path / "run").exists()


def test_trials_of_a_missing_run(tmp_path):
    r = run_nas("trials", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1
