"""backend: ray — the searcher's ledger logic, a local Ray bound to loopback, ASHA, a killed
driver resumed, and a real two-node cluster (network namespaces) that loses a node."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import check_ledger as check_shared_ledger, ledger_of

pytest.importorskip("ray.tune", reason="backend ray needs Ray Tune: pip install 'nas[ray]'")

QUICK = "experiments/quickstart.yaml"
FAST = ["proxy.epochs=1", "proxy.resolution=8", "proxy.batch_size=64"]
LOOPBACK = re.compile(r"^(127\.|\[::ffff:127\.|\[::1\]|localhost)")


# -- helpers -----------------------------------------------------------------------------------
def check_ledger(rows, trials):
    """The shared ledger checks, plus: every trained trial's S was measured with the device held alone."""
    check_shared_ledger(rows, trials)
    for r in rows:
        if r["state"] == "COMPLETE" and r["duplicate_of"] is None:
            assert r["exclusive"] is True


def _ray_pids(tmpdir: str) -> list[int]:
    """Processes of the Ray started with ``RAY_TMPDIR=tmpdir`` (it is in their environment)."""
    needle = f"RAY_TMPDIR={tmpdir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _private_device_lock(folder: str) -> dict:
    """TMPDIR for a search: its device lock (nas.measure) is not shared with other test sessions
    on this host, which would stall measurements while they train (on CI nothing else runs)."""
    return {"TMPDIR": folder}


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class RayDriver:
    """``nas search`` as a subprocess with its own RAY_TMPDIR, so its Ray processes can be told apart."""

    def __init__(self, run_dir, *overrides, fresh=True):
        self.tmpdir = tempfile.mkdtemp(prefix="nr", dir="/tmp")  # short: Ray's socket paths must fit
        self.log = Path(self.tmpdir) / "driver.log"
        args = [sys.executable, "-m", "nas.cli", "search", QUICK, "backend=ray", *overrides, "--run-dir", str(run_dir)]
        env = {**os.environ, "RAY_TMPDIR": self.tmpdir, **_private_device_lock(self.tmpdir)}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(args + (["--fresh"] if fresh else []), stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"nas search did not finish in {timeout}s:\n{self.output()[-3000:]}") from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 10  # a clean ray.shutdown() stops them; give it a moment
        while _ray_pids(self.tmpdir) and time.monotonic() < deadline:
            time.sleep(0.5)
        _kill(_ray_pids(self.tmpdir))
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class ListenerWatch:
    """Polls ``ss -ltnp`` in a thread: every listening socket of the driver's Ray processes."""

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir, self.exposed, self.seen = tmpdir, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ours = set(_ray_pids(self.tmpdir))
            out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                cols = line.split()
                if len(cols) < 4:
                    continue
                pids = {int(p) for p in re.findall(r"pid=(\d+)", line)} & ours
                if not pids:
                    continue
                name = (re.findall(r'\(\("([^"]+)"', line) or ["?"])[0]
                if LOOPBACK.match(cols[3]):
                    self.seen.add(name)
                else:
                    self.exposed.add(f"{cols[3]} {name}")
            self._stop.wait(0.5)


def _study_trials(run_dir):
    from nas.study import RunDir

    try:
        return RunDir(run_dir).load_study().get_trials(deepcopy=False)
    except Exception:  # not created yet
        return []


def _wait_for(predicate, timeout, what, driver=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if driver is not None and driver.proc.poll() is not None:
            raise AssertionError(f"nas search ended (exit {driver.proc.returncode}) before {what}:\n"
                                 f"{driver.output()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{driver.output()[-3000:]}" if driver else ""))


# -- no cluster needed ---------------------------------------------------------------------------
def test_import_nas_does_not_import_ray():
    code = "import sys, nas, nas.backends.ray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_ray_is_one_line_with_the_install_hint(tmp_path, monkeypatch, capsys):
    import nas.cli

    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    environ = dict(os.environ)
    try:
        code = nas.cli.main(["search", QUICK, *FAST, "backend=ray", "trials=1", "--run-dir", str(tmp_path / "r")])
    finally:  # what the backend set for Ray stays out of the other tests' subprocesses
        os.environ.clear()
        os.environ.update(environ)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "pip install 'nas[ray]'" in err


def _prepared(tmp_path, *overrides):
    """A run with its study created (the baseline queued first), as ``nas search`` leaves it."""
    from nas.experiment import load_experiment
    from nas.run import Run
    from nas.search import prepare

    run = Run(load_experiment(QUICK, [*FAST, "controller=random", *overrides]), tmp_path / "run")
    with prepare(run, fresh=True, log=lambda m: None):
        pass
    return run


def _ledger_result(reward=0.5, accuracy=0.5):
    attrs = {"state": "COMPLETE", "accuracy": accuracy, "epoch_accuracies": [accuracy], "step_time": 0.01,
             "step_time_p10": 0.009, "step_time_p90": 0.011, "device": "cpu:test", "exclusive": True, "params": 1000,
             "macs": 2000, "reward": reward, "reason": None, "seconds": 1.0, "seed": 1}
    return {"epoch": 1, "accuracy": accuracy, "ledger": json.dumps(attrs)}


def _progress(told):
    def progress(ledger):
        told.extend((t.number, t.state.name) for t in ledger.take_finished())
    return progress


def test_searcher_tells_the_study_like_the_local_loop(tmp_path):
    """ASHA stops, lost trials, twins and the budget, driven as Tune drives the searcher."""
    from nas.backends.ray import FINISHED, RaySearch
    from nas.ledger import enqueue

    run = _prepared(tmp_path, "trials=4")
    told = []
    search = RaySearch(run, progress=_progress(told), log=lambda m: None)
    study = search.ledger.study

    first = search.suggest("t0")
    assert first["number"] == 0 and study.trials[0].user_attrs["baseline"]  # the baseline first
    search.on_result("t0", {"epoch": 1, "accuracy": 0.41, "params": 10, "macs": 20, "step_time": 0.02,
                            "device": "cpu:test", "exclusive": True})
    search.stop("t0", "pruned: stopped by ASHA after epoch 1 (accuracy 0.41)")
    search.on_complete("t0", {"epoch": 1, "accuracy": 0.41}, error=False)
    t0 = study.trials[0]
    assert t0.state == TrialState.PRUNED and t0.user_attrs["reason"] == "pruned: stopped by ASHA after epoch 1 (accuracy 0.41)"
    assert t0.user_attrs["step_time"] == 0.02
    assert t0.user_attrs["epoch_accuracies"] == [0.41] and t0.user_attrs["exclusive"] is True

    lost = search.suggest("t1")  # its node is lost for good: Tune gives up on it
    search.on_complete("t1", None, error=True)
    t1 = study.trials[1]
    assert t1.state == TrialState.FAIL and t1.user_attrs["reason"].startswith("interrupted:")
    retry = search.suggest("t2")  # the same arch again, and the budget is untouched
    assert retry["params"] == lost["params"] and study.trials[2].user_attrs["retry_of"] == 1

    # a twin of a running trial waits for its result; the searcher asks on meanwhile
    with search.ledger.locked():
        enqueue(study, run.experiment.space, retry["arch"], {})
    assert search.suggest("t3") is None and search.waiting and study.trials[3].state == TrialState.RUNNING
    other = search.suggest("t3")
    assert other["number"] == 4
    search.on_complete("t2", _ledger_result(reward=0.7), error=False)
    t3 = study.trials[3]
    assert t3.state == TrialState.COMPLETE and t3.user_attrs["duplicate_of"] == 2 and t3.values == [0.7]
    assert not search.waiting

    assert search.suggest("t4")["number"] == 5  # the repeat used no budget: one more architecture
    assert search.suggest("t5") is None  # budget full, but trials 4 and 5 are still in flight
    search.on_complete("t3", _ledger_result(reward=0.6), error=False)
    search.on_complete("t4", _ledger_result(reward=0.65), error=False)
    search._quiet_until = 0
    assert search.suggest("t6") == FINISHED
    rows = [(t.number, t.state.name) for t in study.trials]
    assert rows == [(0, "PRUNED"), (1, "FAIL"), (2, "COMPLETE"), (3, "COMPLETE"), (4, "COMPLETE"), (5, "COMPLETE")]
    assert sorted(told) == sorted(rows)  # one progress line per finished trial (the lost one too)


def test_a_bug_in_the_trainable_stops_the_search(tmp_path):
    from nas.backends.ray import FINISHED, RaySearch

    search = RaySearch(_prepared(tmp_path, "trials=3"), log=lambda m: None)
    search.suggest("t0")
    error = {"state": "ERROR", "error": "Traceback (most recent call last):\n  ...\nValueError: boom"}
    search.on_complete("t0", {"epoch": 0, "accuracy": None, "ledger": json.dumps(error)}, error=False)
    study = search.ledger.study
    t0 = study.trials[0]
    assert t0.state == TrialState.FAIL and t0.user_attrs["reason"] == "interrupted: the trial raised: ValueError: boom"
    assert search.suggest("t1") == FINISHED and "ValueError: boom" in search.abort
    assert study.trials[1].state == TrialState.WAITING  # queued for the next run


# -- a local Ray ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_quickstart_on_local_ray_listens_on_loopback_only(tmp_path):
    run = tmp_path / "run"
    driver = RayDriver(run, "trials=3", "proxy.epochs=1", "proxy.resolution=8")
    try:
        with ListenerWatch(driver.tmpdir) as watch:
            code = driver.wait(300)
        out = driver.output()
        assert code == 0, out[-3000:]
        assert not watch.exposed, f"Ray listened beyond loopback: {sorted(watch.exposed)}"
        assert {"raylet", "gcs_server"} <= watch.seen, f"Ray's listeners were not seen: {watch.seen}"
        rows = ledger_of(run)
        check_ledger(rows, 3)
        assert len(rows) == 3 and rows[0]["baseline"]
        assert len(re.findall(r"^\[\d/3\] trial \d", out, re.M)) == 3, out  # one progress line per trial
        assert "Configuration for experiment" not in out and (run / "ray").is_dir()  # Tune's files under the run
    finally:
        driver.cleanup()


@pytest.mark.slow
def test_asha_stops_trials_and_they_are_pruned(tmp_path):
    run = tmp_path / "run"
    # one trial at a time: ASHA compares each trial at epoch 1 with those before it
    driver = RayDriver(run, "trials=4", "seed=3", "proxy.epochs=2", "proxy.resolution=8", "ray.scheduler=asha",
                       "ray.max_concurrent=1", "controller=random")
    try:
        code = driver.wait(400)
        assert code == 0, driver.output()[-3000:]
    finally:
        driver.cleanup()
    rows = ledger_of(run)
    check_ledger(rows, 4)
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned, [(r["number"], r["epoch_accuracies"]) for r in rows]
    for r in pruned:
        assert re.fullmatch(r"pruned: stopped by ASHA after epoch 1 \(accuracy \d\.\d\d\)", r["reason"]), r["reason"]
        assert len(r["epoch_accuracies"]) == 1 and r["step_time"] and r["params"]
    for r in rows:
        if r["state"] == "COMPLETE" and r["duplicate_of"] is None:
            assert len(r["epoch_accuracies"]) == 2


@pytest.mark.slow
def test_driver_killed_then_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    args = ("trials=3", "proxy.epochs=1", "proxy.resolution=8", "ray.max_concurrent=2")
    driver = RayDriver(run, *args)
    try:
        _wait_for(lambda: any(t.state == TrialState.RUNNING for t in _study_trials(run)), 240,
                  "a trial running on Ray", driver)
        time.sleep(3)  # well into the trial
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.proc.wait()
    finally:
        driver.cleanup()  # what the killed driver's Ray left behind
    running = [t.number for t in _study_trials(run) if t.state == TrialState.RUNNING]
    assert running, "the killed driver left no RUNNING trial: nothing to resume"
    again = RayDriver(run, *args, fresh=False)
    try:
        code = again.wait(300)
        out = again.output()
        assert code == 0 and "resuming" in out, out[-3000:]
    finally:
        again.cleanup()
    rows = ledger_of(run)
    check_ledger(rows, 3)
    cut = [r for r in rows if r["state"] == "FAIL"]
    assert {r["number"] for r in cut} == set(running)
    for r in cut:
        assert r["reason"].startswith("interrupted: worker ")
        assert [x for x in rows if x["retry_of"] == r["number"] and x["arch"] == r["arch"]]  # its arch ran again


# -- a real two-node cluster: network namespaces on this machine --------------------------------
def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if not shutil.which("ip"):
        return "no 'ip' command (iproute2)"
    if not shutil.which("ray"):
        return "no 'ray' command"
    probe = f"nasprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _sh(*args: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@contextlib.contextmanager
def two_namespaces():
    """Two network namespaces joined by a veth pair: 10.231.0.1/24 and 10.231.0.2/24 (only in there)."""
    tag = uuid.uuid4().hex[:6]
    names, links = (f"nasA{tag}", f"nasB{tag}"), (f"vA{tag}", f"vB{tag}")
    made = []
    try:
        for name in names:
            _sh("ip", "netns", "add", name)
            made.append(name)
        _sh("ip", "link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for name, link, addr in zip(names, links, ("10.231.0.1/24", "10.231.0.2/24")):
            _sh("ip", "link", "set", link, "netns", name)
            _sh("ip", "-n", name, "addr", "add", addr, "dev", link)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
            _sh("ip", "-n", name, "link", "set", link, "up")
        yield names
    finally:
        for name in made:
            _kill(_netns_pids(name))
        time.sleep(0.5)
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)  # the veth pair goes with them


@pytest.mark.slow
def test_two_node_cluster_survives_losing_a_node(tmp_path):
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    run, port = tmp_path / "run", 6390
    tmpdir = tempfile.mkdtemp(prefix="nr", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": tmpdir, **_private_device_lock(tmpdir),
           # the cluster's own token (not ~/.ray/auth_token), for the nodes and the driver alike
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS"):  # a real multi-node cluster, this one
        env.pop(name, None)
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--block", "--disable-usage-stats"]
    procs = []
    with two_namespaces() as (head_ns, worker_ns):
        try:
            # the head notices a lost node in ~3 s instead of ~30 s
            fast = json.dumps({"health_check_period_ms": 1000, "health_check_failure_threshold": 3})
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", head_ns, "ray", "start", "--head", "--node-ip-address=10.231.0.1",
                 f"--port={port}", "--include-dashboard=false", f"--system-config={fast}", *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", worker_ns, "ray", "start", f"--address=10.231.0.1:{port}",
                 "--node-ip-address=10.231.0.2", *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True))
            # both nodes up before the search starts, or every trial may run on the head
            count = ("import ray, time\n"
                     f"ray.init(address='10.231.0.1:{port}', logging_level='ERROR')\n"
                     "deadline = time.time() + 120\n"
                     "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.time() < deadline: time.sleep(0.5)\n"
                     "print(sum(n['Alive'] for n in ray.nodes()))")
            nodes = subprocess.run(["ip", "netns", "exec", head_ns, sys.executable, "-c", count], env=env,
                                   capture_output=True, text=True, timeout=180)
            assert nodes.stdout.strip().endswith("2"), nodes.stdout + nodes.stderr[-2000:]
            log = tmp_path / "driver.log"
            with open(log, "w") as out:
                driver = subprocess.Popen(
                    ["ip", "netns", "exec", head_ns, sys.executable, "-m", "nas.cli", "search", QUICK, "backend=ray",
                     f"ray.address=10.231.0.1:{port}", "ray.max_concurrent=2", "ray.max_failures=3", "trials=3",
                     "proxy.epochs=2", "proxy.resolution=8", "--run-dir", str(run), "--fresh"],
                    stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONFAULTHANDLER": "1"},
                    start_new_session=True)
            procs.append(driver)

            def training_on_worker_node():
                for pid in _netns_pids(worker_ns):
                    try:
                        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc.train"):
                            return True
                    except OSError:
                        pass
                return False

            deadline = time.monotonic() + 240
            while not training_on_worker_node():
                assert driver.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial ever ran on the second node:\n" + log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(1)  # the trial's first step: its worker builds the candidate, then trains
            _kill(_netns_pids(worker_ns))  # the node is lost: raylet, workers, everything in it
            try:
                code = driver.wait(300)
            except subprocess.TimeoutExpired:
                raise AssertionError("the search did not finish after the node was lost:\n"
                                     + log.read_text()[-3000:]) from None
            out = log.read_text(errors="replace")
            assert code == 0, out[-3000:]
            assert re.search(r"trial \d+: the Ray trial failed .*; retry 1 of 3", out), out[-3000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            _kill(_ray_pids(tmpdir))  # Ray processes outside the namespaces (none expected)
            shutil.rmtree(tmpdir, ignore_errors=True)
    rows = ledger_of(run)
    check_ledger(rows, 3)
    assert len(rows) == 3  # the lost trial was retried by Tune, not re-asked: no extra trial


def test_searcher_travels_to_the_head_node(tmp_path):
    """With Ray Client (ray://) Tune pickles the searcher to the head node: it reopens the study there."""
    import pickle

    from nas.backends.ray import RaySearch

    search = RaySearch(_prepared(tmp_path, "trials=2"), log=print)
    copy = pickle.loads(pickle.dumps(search))
    assert copy.ledger is not search.ledger and copy.ledger.study.study_name == search.ledger.study.study_name
    assert copy.suggest("t0")["number"] == 0
    assert search.ledger.study.trials[0].state == TrialState.RUNNING
