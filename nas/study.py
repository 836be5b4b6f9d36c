"""The Optuna study is the record of a search (DESIGN decision 1).

A run directory holds ``config.yaml`` (the resolved experiment plus where its study lives)
and, by default, the SQLite storage ``study.db``. Every candidate is one trial whose user
attributes are the ledger fields; :func:`ledger` turns trials into plain rows.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RunDir", "LEDGER_FIELDS", "ledger", "ledger_row", "is_finished", "open_storage", "worker_id",
           "worker_alive"]

LEDGER_FIELDS = ("number", "state", "arch", "accuracy", "step_time", "params", "macs", "reward", "reason",
                 "duplicate_of")
# Reasons that are the candidate's own; anything else that FAILed was cut off from outside.
OWN_FAILURES = ("diverged", "oom", "invalid")
CONFIG_FILE = "config.yaml"
# Fields whose change makes a rerun a different search (trials, workers, backend may change).
IDENTITY_FIELDS = ("space", "dataset", "data_dir", "val_fraction", "proxy", "reward", "reference", "controller",
                   "seed", "pruner", "storage")


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
        return self.path / ".ask.lock"

    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / 'study.db').resolve()}"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        import yaml

        if not self.exists():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {CONFIG_FILE}; start one with nas search)")
        return yaml.safe_load(self.config_path.read_text(encoding="utf-8"))

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
        """The run's study, read-only use (``nas trials``, analysis)."""
        config = self.read_config()
        try:
            return optuna.load_study(study_name=config["name"], storage=open_storage(config.get("storage") or self.default_storage()))
        except KeyError:
            raise FileNotFoundError(f"{self.path}: the study {config['name']!r} is not in its storage") from None

    def clear(self) -> None:
        """``--fresh``: delete the study from its storage and this run's files."""
        if self.exists():
            config = self.read_config()
            storage = open_storage(config.get("storage") or self.default_storage())
            try:
                optuna.delete_study(study_name=config["name"], storage=storage)
            except KeyError:
                pass
        for name in (CONFIG_FILE, "study.db", "weights", "ray", ".ask.lock", "search.log"):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; SQLite waits for locks instead of failing under several workers."""
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    if url.startswith(("postgresql", "mysql")):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]  # SQLAlchemy 2 + psycopg 3
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    raise ValueError(f"storage {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or journal:PATH")


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


def ledger_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as the ledger shows it (DESIGN: ``nas trials``)."""
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
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }
    row.update({f"param.{k}": v for k, v in trial.params.items()})
    return row


def ledger(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study, in trial-number order."""
    return [ledger_row(t) for t in study.get_trials(deepcopy=False)]
