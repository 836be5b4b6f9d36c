"""Running a search: prepare the run directory and its study, then let the backend work.

The study is the record (design, decision 1). :func:`prepare` checks a rerun against what
the run recorded *before writing anything*, creates the study (the baseline queued
first) or reopens it, and marks trials of dead workers "interrupted" (queued again).
:func:`run_search` picks the backend from :data:`nas.backends.BACKENDS` and prints one line
per finished trial.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.experiment import Experiment
from nas.ledger import Ledger, ask_lock
from nas.run import Run
from nas.runtime import RuntimeOptions
from nas.study import STUDY_FILE, RunDir, ledger_row

__all__ = ["run_search", "prepare", "Progress", "IDENTITY_ATTR"]

Log = Callable[[str], None]
IDENTITY_ATTR = "nas.experiment"  # study user attribute: what the run must keep to be resumed


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_search(experiment: Experiment, run_dir: str | Path | None = None, *, fresh: bool = False,
               runtime: RuntimeOptions | None = None, log: Log = _stderr) -> Run:
    """Run (or resume) a search to its budget on the experiment's backend.

    Args:
        experiment: The validated experiment.
        run_dir: Where its config and (by default) its study live; default ``runs/<name>``.
        fresh: Start over: delete the run's study and files first (only a run directory's).
        runtime: This machine's settings; default read from the environment.
        log: Where progress lines go.
    """
    from nas.backends import backend

    runtime = runtime if runtime is not None else RuntimeOptions.from_environment()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own lines
    run = Run(experiment, Path(run_dir or Path("runs") / experiment.name).absolute(), runtime)
    chosen = backend(experiment.backend)
    _preflight(run, fresh=fresh)  # cheap refusals first, before any data is loaded or S measured
    chosen.check(run)
    log(_banner(run))
    chosen.prepare(run, log)
    with prepare(run, fresh=fresh, log=log) as ledger:
        if ledger.budget_left() <= 0 and not ledger.open_trials():
            log(f"{run.path}: the budget of {experiment.trials} distinct architectures is met; nothing to do "
                f"(raise trials= to search further)")
            return run
        chosen.run(run, Progress(run, log, counted=ledger.counted()), log)
        ledger.cancel_leftovers()
    return run


def _banner(run: Run) -> str:
    """What this search is, in one line, before anything slow happens."""
    import torch

    exp = run.experiment
    where = {"local": f"local, {exp.workers} worker{'s' if exp.workers > 1 else ''}",
             "ray": f"ray, {exp.ray.max_concurrent} trials at a time",
             "simulated": f"simulated, {exp.simulated.workers} virtual worker{'s' if exp.simulated.workers > 1 else ''}"}
    device = exp.device if exp.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return (f"nas search {exp.name}: space {exp.space.name} ({exp.space.size:,} architectures), data "
            f"{exp.data.dataset}, budget {exp.trials} trials (distinct architectures), controller "
            f"{exp.controller.name}, backend {where[exp.backend]}, device {device}; run directory {run.path}")


@contextlib.contextmanager
def prepare(run: Run, *, fresh: bool, log: Log = _stderr) -> Iterator[Ledger]:
    """Create or reopen the run's study; yields a ledger over it while holding the run.

    Every driver holds the run directory's run lock shared while it runs, so ``--fresh``
    (which needs it alone) never deletes a study another driver is using.

    Raises:
        ValueError: the folder is not a run directory of ours, the run was started with
            another experiment, or its study is missing or unreadable (one line each;
            nothing is written).
    """
    run_dir, exp = run.run_dir, run.experiment
    created = not run_dir.path.exists()
    run_dir.path.mkdir(parents=True, exist_ok=True)
    try:
        with open(run_dir.run_lock_path, "a") as run_lock:
            with ask_lock(run_dir.lock_path, None):
                _check_folder(run_dir, exp, fresh=fresh)
                if fresh:
                    _clear(run_dir, run_lock)
                fcntl.flock(run_lock, fcntl.LOCK_SH)
                study, resumed = _open_or_create(run, log)
                if not run_dir.exists():
                    run_dir.write_config(exp.to_dict())
            created = False  # the run exists now: from here on, errors leave it in place
            ledger = run.ledger()
            if resumed:
                lost = ledger.requeue_dead()
                ledger.sync()
                log(f"resuming {run.path}: {ledger.counted()} of {exp.trials} architectures evaluated"
                    + (f"; {lost} trial(s) of stopped workers queued again" if lost else ""))
            else:
                ledger.sync()
            yield ledger
    finally:
        if created:  # nothing of the run came to be: leave no empty folder behind
            for name in (".ask.lock", ".run.lock"):
                with contextlib.suppress(OSError):
                    (run_dir.path / name).unlink()
            with contextlib.suppress(OSError):
                run_dir.path.rmdir()


def _preflight(run: Run, *, fresh: bool) -> None:
    """What can be refused without writing anything: the folder, the storage, the recorded experiment."""
    from nas.storage import open_storage

    exp, run_dir = run.experiment, run.run_dir
    _check_folder(run_dir, exp, fresh=fresh)
    own_study = exp.storage is None and (run_dir.path / STUDY_FILE).is_file()
    if exp.storage is None and (fresh or not own_study):
        return  # nothing to read yet, or --fresh deletes it unread (it may be what is broken)
    if own_study and run_dir.exists() and (run_dir.path / STUDY_FILE).stat().st_size == 0:
        raise ValueError(f"{run_dir.path / STUDY_FILE} is empty: the run's study is gone; rerun with --fresh to "
                         "start over")
    storage = open_storage(run.storage_url)
    if not fresh:
        try:
            study = optuna.load_study(study_name=exp.name, storage=storage)
        except KeyError:
            if run_dir.exists():
                raise ValueError(f"{run.path}: its study {exp.name!r} is not in {run.storage_url} (empty or replaced "
                                 "file?); rerun with --fresh to start over") from None
            return
        _check_same_experiment(run, study)


def _clear(run_dir: RunDir, run_lock) -> None:
    try:
        fcntl.flock(run_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(f"{run_dir.path}: another nas search is running on this run directory; --fresh would "
                         "delete its study: stop it first") from None
    run_dir.clear()


def _check_folder(run_dir: RunDir, exp: Experiment, *, fresh: bool) -> None:
    """A folder without a config of ours must be empty, or (unless starting afresh) hold our study."""
    if not run_dir.path.is_dir():
        return
    if fresh:
        if any(p.name not in (".ask.lock", ".run.lock") for p in run_dir.path.iterdir()) and not run_dir.is_ours():
            raise ValueError(f"{run_dir.path} is not a run directory of nas (no readable config.yaml); --fresh "
                             "deletes only run directories: choose another --run-dir")
        return
    if run_dir.exists():
        if not run_dir.is_ours():
            raise ValueError(f"{run_dir.config_path}: not the config of a nas run; choose another --run-dir")
        return
    entries = [p.name for p in run_dir.path.iterdir() if p.name not in (".ask.lock", ".run.lock")]
    if not entries or exp.storage is not None:
        return
    if STUDY_FILE in entries:  # its config was deleted: the study must still be ours (checked when opened)
        from nas.storage import StorageError, open_storage

        try:
            open_storage(run_dir.default_storage())
            return
        except StorageError:
            pass
    raise ValueError(f"{run_dir.path} is not a run directory of nas (it holds {', '.join(sorted(entries)[:3])}"
                     f"{' ...' if len(entries) > 3 else ''}); choose another --run-dir")


def _open_or_create(run: Run, log: Log) -> tuple[optuna.Study, bool]:
    """The run's study, checked against the experiment; created (baseline first) when the run is new.

    Called under the ask lock, so drivers starting together create the study once.
    """
    from nas.ledger import enqueue
    from nas.storage import StorageError, open_storage

    exp, run_dir = run.experiment, run.run_dir
    try:
        storage = open_storage(run.storage_url)
        study = optuna.load_study(study_name=exp.name, storage=storage)
    except KeyError:
        study = None
    except Exception as err:  # a broken database shows itself at the first query
        if not run_dir.exists() and exp.storage is None:
            raise ValueError(f"{run.path} is not a run directory of nas (its {STUDY_FILE} is not a readable study); "
                             "choose another --run-dir") from None
        message = str(err) if isinstance(err, StorageError) else \
            f"{run.storage_url}: cannot read the study: {str(err).splitlines()[0][:200]}"
        raise StorageError(message) from None
    if study is not None:
        _check_same_experiment(run, study)
        return study, True
    if run_dir.exists():
        raise ValueError(f"{run.path}: its study {exp.name!r} is not in {run.storage_url} (empty or replaced "
                         "file?); rerun with --fresh to start over")
    if exp.storage is None and optuna.get_all_study_names(storage):
        raise ValueError(f"{run.path} is not a run directory of nas (its {STUDY_FILE} holds other studies); "
                         "choose another --run-dir")
    try:
        study = optuna.create_study(study_name=exp.name, storage=storage, directions=exp.directions)
    except optuna.exceptions.DuplicatedStudyError:  # a driver on another host was quicker
        study = optuna.load_study(study_name=exp.name, storage=storage)
        _check_same_experiment(run, study)
        return study, True
    study.set_user_attr(IDENTITY_ATTR, _identity(exp))
    first = exp.reference_arch
    if first is not None and exp.space.contains(first):
        enqueue(study, exp.space, first, {"baseline": True})
    return study, False


def _identity(exp: Experiment) -> dict[str, Any]:
    return json.loads(json.dumps(exp.identity(), default=str))


def _check_same_experiment(run: Run, study: optuna.Study) -> None:
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None and run.run_dir.exists():  # a run from before the study kept its identity
        config = run.run_dir.read_config()
        recorded = {key: config.get(key) for key in _identity(run.experiment)}
    if recorded is None:
        return
    now = _identity(run.experiment)
    for key, value in now.items():
        if _normal(recorded.get(key)) != _normal(value):
            raise ValueError(f"{run.path}: was started with {key} {_short(recorded.get(key))}, now {_short(value)}; "
                             "rerun with --fresh to start over, or choose another --run-dir")


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in sorted(value.items()) if v is not None}
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class Progress:
    """One line per finished trial: count, the trial, best so far, ETA (from the ledger, no rereads)."""

    def __init__(self, run: Run, log: Log, *, counted: int = 0) -> None:
        self.run, self.log = run, log
        self.key = run.experiment.reward.objectives()[0][0]
        self.start, self.counted_at_start = time.time(), counted
        self.best: tuple[float, int] | None = None

    def __call__(self, ledger: Ledger) -> None:
        """Print the trials the ledger saw finish at its last sync."""
        for trial in ledger.take_finished():
            self._line(ledger, trial)

    def _line(self, ledger: Ledger, trial: FrozenTrial) -> None:
        row = ledger_row(trial)
        if trial.state == TrialState.COMPLETE and row.get(self.key) is not None:
            value = float(row[self.key])
            if self.best is None or value > self.best[0]:
                self.best = (value, trial.number)
        done, budget = ledger.counted(), self.run.experiment.trials
        if trial.state == TrialState.COMPLETE:
            what = (f"{self.key} {row[self.key]:.4f}  acc {row['accuracy']:.4f}  S {row['step_time'] * 1e3:.1f} ms  "
                    f"P {row['params']:,}")
        else:
            what = row["reason"] or ""
        tags = " [baseline]" if row["baseline"] else ""
        tags += f" (= trial {row['duplicate_of']})" if row["duplicate_of"] is not None else ""
        tags += " [escape]" if row.get("escape") else ""
        best = f"{self.best[0]:.4f} (trial {self.best[1]})" if self.best else "-"
        self.log(f"[{done}/{budget}] trial {trial.number}{tags} {row['state']}  {what}  | best {best}  "
                 f"ETA {self._eta(done, budget)}")

    def _eta(self, done: int, budget: int) -> str:
        new = done - self.counted_at_start
        if new <= 0:
            return "-"
        return _duration((time.time() - self.start) / new * max(0, budget - done))


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
