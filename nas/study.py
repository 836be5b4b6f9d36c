"""The Optuna study is the record of a search (design, decision 1); this is its read side.

A run directory holds ``config.yaml`` (the resolved experiment, written once when the run
starts) and, by default, the SQLite storage ``study.db``. Every candidate is one trial
whose user attributes are the ledger fields; :func:`ledger` turns trials into plain rows.
The write side, the study protocol, is :mod:`nas.ledger`.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RunDir", "LEDGER_FIELDS", "OWN_FAILURES", "ledger", "ledger_row", "is_finished", "is_interrupted",
           "is_infeasible", "worker_id", "worker_alive"]

LEDGER_FIELDS = ("number", "state", "arch", "accuracy", "step_time", "params", "macs", "reward", "reason",
                 "duplicate_of")
# Reasons that are the candidate's own; anything else that FAILed was cut off from outside,
# except "infeasible" (a hard constraint, checked before training), which is no evaluation.
OWN_FAILURES = ("diverged", "oom", "invalid")
INFEASIBLE = "infeasible"
CONFIG_FILE = "config.yaml"
STUDY_FILE = "study.db"
# What a run directory of ours may hold; --fresh deletes these and nothing else.
_RUN_FILES = (CONFIG_FILE, STUDY_FILE, f"{STUDY_FILE}-wal", f"{STUDY_FILE}-shm", "weights", "ray", "search.log",
              "fidelity.json")
# Locks stay: another process may hold them while --fresh clears the rest.
_LOCK_FILES = (".ask.lock", ".run.lock")


class RunDir:
    """A run directory: where the config, the default storage and kept weights live."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def weights_path(self, number: int) -> Path:
        return self.path / "weights" / f"trial_{number}.pt"

    @property
    def lock_path(self) -> Path:
        """The ask lock: held while the budget is counted and a candidate proposed."""
        return self.path / ".ask.lock"

    @property
    def run_lock_path(self) -> Path:
        """Held shared by every driver of the run while it runs; ``--fresh`` needs it alone."""
        return self.path / ".run.lock"

    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / STUDY_FILE).resolve()}"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def is_ours(self) -> bool:
        """A run directory written by ``nas search`` (its config names the experiment)."""
        try:
            config = self.read_config()
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and isinstance(config.get("name"), str) and "space" in config

    def read_config(self) -> dict[str, Any]:
        from nas.yamlio import read_yaml

        if not self.exists():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {CONFIG_FILE}; start one with nas search)")
        config = read_yaml(self.config_path)
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_path}: not a run's config")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        os.replace(tmp, self.config_path)

    def storage_url(self) -> str:
        return self.read_config().get("storage") or self.default_storage()

    def study_name(self) -> str:
        return self.read_config()["name"]

    def load_study(self) -> optuna.Study:
        """The run's study, for reading (``nas trials``, analysis)."""
        from nas.storage import StorageError, open_storage

        config = self.read_config()
        url = config.get("storage") or self.default_storage()
        storage = open_storage(url)
        try:
            return optuna.load_study(study_name=config["name"], storage=storage)
        except KeyError:
            raise FileNotFoundError(f"{self.path}: the study {config['name']!r} is not in its storage {url} "
                                    "(empty or foreign file?); rerun the search with --fresh to start over") from None
        except Exception as err:  # a broken database surfaces only on the first query
            raise StorageError(f"{self.path}: cannot read the study from {url}: {str(err).splitlines()[0][:200]}") \
                from None

    def clear(self) -> None:
        """``--fresh``: delete the study from its storage and this run's own files, nothing else.

        Raises:
            ValueError: the folder is not empty and holds no config of a search (it may be
                somebody else's folder).
        """
        if not self.path.is_dir() or not any(p.name not in _LOCK_FILES for p in self.path.iterdir()):
            return
        if not self.is_ours():
            raise ValueError(f"{self.path} is not a run directory of nas (no readable {CONFIG_FILE}); --fresh "
                             "deletes only run directories: choose another --run-dir")
        config = self.read_config()
        url = config.get("storage") or self.default_storage()
        if url != self.default_storage():  # a database elsewhere: delete the study, not the database
            _delete_study(config["name"], url)
        for name in _RUN_FILES:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()


def _delete_study(name: str, url: str) -> None:
    from nas.storage import open_storage

    try:
        optuna.delete_study(study_name=name, storage=open_storage(url))
    except KeyError:
        pass


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str | None) -> bool:
    """Whether the process that owns a RUNNING trial still runs (only knowable on this host)."""
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's worker: assume alive
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def is_finished(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a reason of the candidate's own: what counts toward ``trials``."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("reason") or "").startswith(OWN_FAILURES)


def is_infeasible(trial: FrozenTrial) -> bool:
    """FAIL because a hard constraint was broken (never trained, no budget used)."""
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("reason") or "").startswith(INFEASIBLE)


def is_interrupted(trial: FrozenTrial) -> bool:
    """FAIL because the trial was cut off from outside; its architecture was queued again."""
    return trial.state == TrialState.FAIL and not is_finished(trial) and not is_infeasible(trial)


def ledger_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as the ledger shows it (docs/design.md)."""
    attrs = trial.user_attrs
    reason = attrs.get("reason")
    if trial.state == TrialState.FAIL and not reason:
        reason = "interrupted: the worker stopped without reporting"
    row = {
        "number": trial.number, "state": trial.state.name, "arch": attrs.get("arch"),
        "accuracy": attrs.get("accuracy"), "step_time": attrs.get("step_time"), "params": attrs.get("params"),
        "macs": attrs.get("macs"), "reward": attrs.get("reward"), "reason": reason,
        "duplicate_of": attrs.get("duplicate_of"),
        "step_time_p10": attrs.get("step_time_p10"), "step_time_p90": attrs.get("step_time_p90"),
        "device": attrs.get("device"), "exclusive": attrs.get("exclusive"),
        "epoch_accuracies": attrs.get("epoch_accuracies"), "baseline": bool(attrs.get("baseline")),
        "retry_of": attrs.get("retry_of"), "seed": attrs.get("seed"), "seconds": attrs.get("seconds"),
        "escape": attrs.get("escape"), "worker": attrs.get("worker"),
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }
    row.update({f"param.{k}": v for k, v in trial.params.items()})
    return row


def ledger(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study, in trial-number order."""
    return [ledger_row(t) for t in study.get_trials(deepcopy=False)]
