"""The search: ask the study for a candidate, evaluate it, tell the study (DESIGN decisions 1, 2, 6).

The study is the only state. A driver prepares the run (config, study, the baseline
enqueued first, trials of dead workers marked "interrupted" and queued again) and then
runs workers: in-process, N local processes, or Ray (see ``nas.backends.ray``). Each
worker loops until the study holds ``trials`` finished trials; an architecture already in
the study is never trained again, its result is reused with ``duplicate_of`` set.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from nas.experiment import Experiment, from_dict
from nas.study import IDENTITY_FIELDS, RunDir, is_finished, open_storage, worker_alive, worker_id

__all__ = ["SearchRun", "prepare", "run_search", "Candidate", "interrupted_reason", "ask_lock",
           "budget_left", "find_duplicate", "record", "record_duplicate", "fail_interrupted"]

Log = Callable[[str], None]
_RESULT_ATTRS = ("accuracy", "epoch_accuracies", "step_time", "step_time_p10", "step_time_p90", "device",
                 "exclusive", "params", "macs", "reward", "reason")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class SearchRun:
    """An experiment bound to its run directory and study."""

    experiment: Experiment
    run_dir: RunDir

    @property
    def storage_url(self) -> str:
        return self.experiment.storage or self.run_dir.default_storage()

    def storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.storage_url)

    def directions(self) -> list[str]:
        return [d for _, d in self.experiment.reward_spec().objectives()]

    def study(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        return optuna.load_study(study_name=self.experiment.name, storage=self.storage(), sampler=sampler,
                                 pruner=self.pruner())

    def distributions(self) -> dict[str, CategoricalDistribution]:
        return {d.name: CategoricalDistribution(d.choices) for d in self.experiment.load_space().decisions}

    def pruner(self) -> optuna.pruners.BasePruner:
        name, epochs = self.experiment.pruner, self.experiment.proxy_config().epochs
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
        return optuna.pruners.NopPruner()

    def sampler(self, worker_index: int, trials_at_start: int) -> optuna.samplers.BaseSampler:
        from nas.controllers import make_sampler

        name, seed = self.experiment.controller_name(), self.experiment.seed
        # Our controllers draw per-trial randomness from (seed, trial number) and rebuild their
        # state from the study; Optuna's keep an RNG stream, which must differ per worker and
        # per resume, or every worker (and every resume) would propose the same sequence.
        if name not in ("reinforce", "evolution"):
            seed = seed + 10007 * worker_index + trials_at_start
        return make_sampler(name, seed=seed, options=self.experiment.controller_options())


def interrupted_reason(why: str) -> str:
    return f"interrupted: {why}"


def prepare(experiment: Experiment, run_dir: str | Path | None, *, fresh: bool, log: Log = _stderr) -> SearchRun:
    """Create or reopen the run: config, study, the baseline first, interrupted trials queued again."""
    run = SearchRun(experiment, RunDir(run_dir or Path("runs") / experiment.name))
    if fresh:
        run.run_dir.clear()
    if run.run_dir.exists():
        _check_same_experiment(run)
        log(f"resuming {run.run_dir.path}")
    run.run_dir.write_config(experiment.to_dict())
    study = optuna.create_study(study_name=experiment.name, storage=run.storage(), load_if_exists=True,
                                directions=run.directions())
    space = experiment.load_space()
    with ask_lock(study, run):  # drivers starting together enqueue the baseline once
        if not study.get_trials(deepcopy=False):
            reference = experiment.reference_arch(space)
            if reference is not None and space.contains(reference):
                study.enqueue_trial(space.to_decisions(reference), user_attrs={"arch": str(reference), "baseline": True})
        requeue_interrupted(study, space)
    return run


def _check_same_experiment(run: SearchRun) -> None:
    saved = run.run_dir.read_config()
    now = run.experiment.to_dict()
    for key in IDENTITY_FIELDS:
        if _normal(saved.get(key)) != _normal(now.get(key)):
            raise ValueError(f"{run.run_dir.path}: was started with {key} {saved.get(key)!r}, now {now.get(key)!r}; "
                             "rerun with --fresh to start over, or choose another --run-dir")


def _normal(value: Any) -> Any:
    return {k: _normal(v) for k, v in sorted(value.items())} if isinstance(value, dict) else value


def requeue_interrupted(study: optuna.Study, space, *, alive: Callable[[str | None], bool] = worker_alive) -> int:
    """RUNNING trials whose worker is gone end FAIL "interrupted"; their archs are queued again."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if alive(worker):
            continue
        fail_interrupted(study, trial, f"worker {worker or 'unknown'} stopped (killed or lost) before reporting")
        count += 1
    return count


def fail_interrupted(study: optuna.Study, trial: FrozenTrial | Trial, why: str) -> None:
    """End a trial cut off from outside; its architecture goes back in the queue (budget untouched)."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", interrupted_reason(why))
    study.tell(trial.number, state=TrialState.FAIL)
    params = trial.params
    if params:
        attrs = {"arch": trial.user_attrs.get("arch"), "retry_of": trial.number}
        if trial.user_attrs.get("baseline"):
            attrs["baseline"] = True
        study.enqueue_trial(params, user_attrs={k: v for k, v in attrs.items() if v is not None})


# -- the budget --------------------------------------------------------------------------------
def budget_left(study: optuna.Study, trials: int) -> int:
    """Trials still to start: ``trials`` minus finished minus running ones."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                    TrialState.RUNNING))
    used = sum(1 for t in done if t.state == TrialState.RUNNING or is_finished(t))
    return trials - used


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Serialises "count the budget, then ask" among the workers of one run directory.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def ask_lock(study: optuna.Study, run: SearchRun) -> Iterator[None]:
    """Serialises "count the budget, then ask" among every worker of the study.

    The run directory's file lock covers the workers of one host; on PostgreSQL an advisory
    lock in the database also covers drivers on other hosts (or with another run directory).
    """
    with _file_lock(run.run_dir.lock_path), _database_lock(study):
        yield


@contextlib.contextmanager
def _database_lock(study: optuna.Study) -> Iterator[None]:
    backend = getattr(study._storage, "_backend", study._storage)  # RDBStorage behind Optuna's cache
    engine = getattr(backend, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import zlib

    from sqlalchemy import text

    key = zlib.crc32(f"nas.ask:{study.study_name}".encode())
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


# -- one candidate in a trial ------------------------------------------------------------------
class Candidate:
    """Evaluates trials of one run in this process (data loaded and S0 measured once)."""

    def __init__(self, run: SearchRun, *, device: str | None = None) -> None:
        from nas.data import load_dataset
        from nas.evaluate import default_cache, resolve_reward

        exp = run.experiment
        self.run, self.space, self.proxy = run, exp.load_space(), exp.proxy_config()
        self.device = device if device is not None else (None if exp.device == "auto" else exp.device)
        self.data = load_dataset(exp.dataset, data_dir=exp.data_dir, seed=exp.seed, val_fraction=exp.val_fraction,
                                 resolution=self.proxy.resolution if exp.dataset in ("imagefolder", "synthetic") else None)
        self.cache = default_cache()
        self.reference = exp.reference_arch(self.space)
        self.reward = resolve_reward(exp.reward_spec(), self.reference, num_classes=self.data.num_classes,
                                     proxy=self.proxy, device=self.device, cache=self.cache)

    def seed(self, number: int) -> int:
        return (self.run.experiment.seed * 1_000_003 + number) % 2**31

    def evaluate(self, trial: Trial, *, report: Callable[[int, float], None]) -> dict[str, Any]:
        """Train and score the trial's architecture; returns the ledger attributes (state included)."""
        return self.evaluate_arch(self.space.from_decisions(trial.params), trial.number, report=report)

    def evaluate_arch(self, arch, number: int, *, report: Callable[[int, float], None],
                      on_measured: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """``evaluate`` for an arch and a trial number (no Optuna trial: the Ray trainable's form)."""
        import dataclasses

        from nas.evaluate import evaluate

        proxy = dataclasses.replace(self.proxy, seed=self.seed(number))
        weights = self.run.run_dir.weights_path(number) if self.run.experiment.keep_weights else None
        result = evaluate(arch, self.data, proxy, self.reward, reference=self.reference, device=self.device,
                          cache=self.cache, on_epoch=report, on_measured=on_measured, keep_weights=weights)
        attrs = {k: getattr(result, k) for k in _RESULT_ATTRS}
        return {**attrs, "state": result.state, "seconds": round(result.seconds, 3), "seed": proxy.seed}


def objective_values(run: SearchRun, attrs: dict[str, Any]) -> list[float]:
    return [float(attrs[name]) for name, _ in run.experiment.reward_spec().objectives()]


def find_duplicate(study: optuna.Study, arch: str, number: int) -> FrozenTrial | None:
    """An earlier trial of the same architecture that was (or is being) trained."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number or t.user_attrs.get("arch") != arch or t.user_attrs.get("duplicate_of") is not None:
            continue
        if t.state == TrialState.RUNNING or is_finished(t):
            return t
    return None


def record(study: optuna.Study, trial: Trial, run: SearchRun, attrs: dict[str, Any]) -> str:
    """Write the ledger attributes and end the trial in its state; returns the state name."""
    state = attrs.pop("state")
    for key, value in attrs.items():
        if value is not None:
            trial.set_user_attr(key, value)
    if state == "COMPLETE":
        study.tell(trial, objective_values(run, attrs))
    else:
        study.tell(trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
    return state


def record_duplicate(study: optuna.Study, trial: Trial, run: SearchRun, original: FrozenTrial) -> str:
    """End ``trial`` with the result of ``original`` (same arch, finished), ``duplicate_of`` set."""
    attrs = {k: original.user_attrs.get(k) for k in (*_RESULT_ATTRS, "seed")}
    attrs.update(state=original.state.name, duplicate_of=original.number)
    return record(study, trial, run, attrs)


def run_trial(study: optuna.Study, trial: Trial, run: SearchRun, candidate: Candidate) -> str:
    """Evaluate (or reuse) one asked trial and tell the study."""
    arch = trial.user_attrs["arch"]
    original = find_duplicate(study, arch, trial.number)
    while original is not None and original.state == TrialState.RUNNING:
        time.sleep(1.0)  # another worker trains this arch right now: wait for its result
        original = study._storage.get_trial(original._trial_id)
        if original.state == TrialState.FAIL and not is_finished(original):
            original = None  # it was interrupted: train it here
    if original is not None:
        return record_duplicate(study, trial, run, original)

    single = len(run.directions()) == 1

    def report(epoch: int, accuracy: float) -> None:
        if single:
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned: accuracy {accuracy:.4f} after epoch {epoch} "
                                         f"({run.experiment.pruner} pruner)")

    try:
        attrs = candidate.evaluate(trial, report=report)
    except optuna.TrialPruned as pruned:
        attrs = {"state": "PRUNED", "reason": str(pruned), "params": None}
        from nas.cost import model_cost

        cost = model_cost(candidate.space.from_decisions(trial.params), candidate.proxy.resolution,
                          candidate.data.num_classes)
        attrs.update(params=cost.params, macs=cost.macs)
    return record(study, trial, run, attrs)


def worker_loop(run: SearchRun, *, worker_index: int = 0, device: str | None = None,
                on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
    """Ask, evaluate, tell until the budget is met. Ctrl-C ends the trial in flight "interrupted"."""
    exp = run.experiment
    study = run.study()
    study.sampler = run.sampler(worker_index, len(study.get_trials(deepcopy=False)))
    distributions = run.distributions()
    candidate = Candidate(run, device=device)
    while True:
        with ask_lock(study, run):
            if budget_left(study, exp.trials) <= 0:
                return
            trial = study.ask(distributions)
            trial.set_user_attr("worker", worker_id())
            trial.set_user_attr("arch", str(candidate.space.from_decisions(trial.params)))
        try:
            run_trial(study, trial, run, candidate)
        except KeyboardInterrupt:
            fail_interrupted(study, trial, "stopped by the user (Ctrl-C)")
            raise
        if on_trial is not None:
            on_trial(study, study._storage.get_trial(trial._trial_id))


# -- driving a whole search --------------------------------------------------------------------
def run_search(experiment: Experiment, run_dir: str | Path | None = None, *, fresh: bool = False,
               log: Log = _stderr) -> SearchRun:
    """Run (or resume) a search to its budget on the experiment's backend."""
    run = prepare(experiment, run_dir, fresh=fresh, log=log)
    progress = Progress(run, log)
    if experiment.backend == "ray":
        from nas.backends.ray import run_on_ray

        run_on_ray(run, on_trial=progress)
    elif experiment.workers == 1:
        worker_loop(run, on_trial=progress)
    else:
        _run_local_workers(run, progress)
    return run


def _run_local_workers(run: SearchRun, progress: "Progress") -> None:
    """N worker processes on one study; the driver watches the study and reports progress."""
    n = run.experiment.workers
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NAS_TORCH_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-m", "nas.search", str(run.run_dir.path), str(i)], env=env)
             for i in range(n)]
    study = run.study()
    seen: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            progress.catch_up(study, seen)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(2)
        for p in procs:
            p.wait()
        raise
    progress.catch_up(study, seen)
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} workers failed (exit codes {failed})")


class Progress:
    """One line per finished trial: count, the trial, best reward so far, ETA."""

    def __init__(self, run: SearchRun, log: Log) -> None:
        self.run, self.log, self.start = run, log, time.time()
        self.key = run.experiment.reward_spec().objectives()[0][0]

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from nas.study import ledger_row

        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if is_finished(t))
        rows = [ledger_row(t) for t in trials if t.state == TrialState.COMPLETE]
        best = max((r[self.key] for r in rows if r.get(self.key) is not None), default=None)
        row = ledger_row(trial)
        elapsed = time.time() - self.start
        new_done = max(1, sum(1 for t in trials if is_finished(t) and t.datetime_complete
                              and t.datetime_complete.timestamp() >= self.start))
        eta = elapsed / new_done * max(0, self.run.experiment.trials - done)
        what = (f"{self.key} {row[self.key]:.4f}  acc {row['accuracy']:.4f}  S {row['step_time'] * 1e3:.1f} ms  "
                f"P {row['params']:,}" if row["state"] == "COMPLETE" else row["reason"] or "")
        dup = f" (= trial {row['duplicate_of']})" if row["duplicate_of"] is not None else ""
        base = " [baseline]" if row["baseline"] else ""
        best_text = f"{best:.4f}" if best is not None else "-"
        self.log(f"[{done}/{self.run.experiment.trials}] trial {trial.number}{base} {row['state']}{dup}  {what}"
                 f"  | best {best_text}  ETA {_duration(eta)}")

    def catch_up(self, study: optuna.Study, seen: set[int]) -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                self(study, t)


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _worker_main(argv: list[str]) -> int:
    """``python -m nas.search RUN_DIR WORKER_INDEX``: one local worker process."""
    import torch

    threads = os.environ.get("NAS_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    run_dir, index = RunDir(argv[0]), int(argv[1])
    config = run_dir.read_config()
    run = SearchRun(from_dict(config, source=str(run_dir.config_path)), run_dir)
    try:
        worker_loop(run, worker_index=index)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
