"""Where a study lives: opening an Optuna storage, and writing a trial's fields in one go.

Optuna writes every ``suggest_*`` and every ``set_user_attr`` in a transaction of its own;
a search that records two dozen decisions and a dozen ledger fields per candidate then
spends most of its bookkeeping on commits. :class:`BatchingStorage` wraps the real storage
and, inside ``with storage.batch():``, keeps those writes in memory and commits them
together when the block ends (or just before the trial changes state), in one
transaction on a relational database.
"""
from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = ["StorageError", "BatchingStorage", "FastReadStorage", "open_storage", "sqlite_path"]


class StorageError(ValueError):
    """A storage that cannot be opened or read; one line naming it and a way out."""


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL (None for other storages)."""
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def open_storage(url: str) -> BatchingStorage:
    """The Optuna storage at ``url``, wrapped for batched writes.

    SQLite runs in write-ahead-log mode with ``synchronous=NORMAL``: readers never block the
    writer, a commit costs no fsync, and a killed process still leaves a consistent file.

    Raises:
        StorageError: the URL is not understood, the database cannot be reached, or the
            file is not a readable SQLite database.
    """
    try:
        if url.startswith("sqlite:"):
            path = sqlite_path(url)
            if path is not None and path.exists() and path.is_file() and path.stat().st_size:
                _check_sqlite_file(path)
            storage = FastReadStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
            _tune_sqlite(storage)
        elif url.startswith(("postgresql", "mysql")):
            engine_url = url
            if url.startswith("postgresql://"):
                engine_url = "postgresql+psycopg://" + url[len("postgresql://"):]  # SQLAlchemy 2 + psycopg 3
            storage = FastReadStorage(engine_url, engine_kwargs={"pool_pre_ping": True,
                                                            "connect_args": _connect_timeout(engine_url)})
        elif url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            storage = optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
        else:
            raise StorageError(f"storage {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or journal:PATH")
    except StorageError:
        raise
    except Exception as err:  # SQLAlchemy, psycopg, OS errors: say which storage and why, in one line
        raise StorageError(f"storage {_safe(url)}: cannot open it: {_first_line(err)}") from None
    return BatchingStorage(optuna.storages.get_storage(storage) if isinstance(storage, RDBStorage) else storage)


def _connect_timeout(url: str) -> dict[str, Any]:
    return {"connect_timeout": 10} if "psycopg" in url else {}


def _check_sqlite_file(path: Path) -> None:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
    except sqlite3.DatabaseError as err:
        raise StorageError(f"{path} is not a readable SQLite study ({err}); rerun the search with --fresh "
                           "to start over, or move the file away") from None


class FastReadStorage(RDBStorage):
    """Optuna's relational storage, reading trials as plain SQL rows rather than ORM objects.

    Optuna builds an ORM object for every row of a trial (each decision, value and
    attribute: some 30 rows per candidate of a search) and parses every parameter's
    distribution anew, so a worker joining a 10,000-trial study spent about 9 s there on a
    CPU core. The same rows, read in one transaction, make the same FrozenTrials.
    """

    def _get_trials(self, study_id: int, states, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        import sqlalchemy
        from optuna.storages._rdb import models

        trials = models.TrialModel.__table__
        included = {t for t in included_trial_ids if t <= trial_id_greater_than}
        where = [trials.c.study_id == study_id]
        if states is not None:
            where.append(trials.c.state.in_(list(states)))
        wanted = list(where)
        if trial_id_greater_than > -1:
            later = trials.c.trial_id > trial_id_greater_than
            wanted.append(sqlalchemy.or_(trials.c.trial_id.in_(included), later) if included else later)
        with self.engine.connect() as conn:  # one transaction: one consistent view of the study
            studies = models.StudyModel.__table__
            if conn.execute(sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id)).first() is None:
                raise KeyError(f"No study with study_id {study_id} exists.")
            try:
                rows = _trial_rows(conn, trials, wanted)
            except sqlalchemy.exc.OperationalError:  # too many ids for IN (SQLite's variable limit): filter here
                rows = _trial_rows(conn, trials, where)
                rows = {k: v for k, v in rows.items() if k in included or k > trial_id_greater_than}
        return [_frozen(trial_id, *row) for trial_id, row in rows.items()]


def _trial_rows(conn, trials, where: list) -> dict[int, tuple]:
    """trial_id -> (number, state, start, complete, params, values, user, system, intermediate), by id."""
    import sqlalchemy
    from optuna.storages._rdb import models

    select = sqlalchemy.select
    rows = {r.trial_id: (r.number, r.state, r.datetime_start, r.datetime_complete, [], [], [], [], [])
            for r in conn.execute(select(trials).where(*where).order_by(trials.c.trial_id))}
    ids = select(trials.c.trial_id).where(*where).scalar_subquery()
    children = ((models.TrialParamModel, 4, ("param_name", "param_value", "distribution_json")),
                (models.TrialValueModel, 5, ("objective", "value", "value_type")),
                (models.TrialUserAttributeModel, 6, ("key", "value_json")),
                (models.TrialSystemAttributeModel, 7, ("key", "value_json")),
                (models.TrialIntermediateValueModel, 8, ("step", "intermediate_value", "intermediate_value_type")))
    for model, slot, columns in children:
        table = model.__table__
        key = table.primary_key.columns.values()[0]
        query = select(table.c.trial_id, *(table.c[c] for c in columns)).where(table.c.trial_id.in_(ids))
        for r in conn.execute(query.order_by(key)):
            if r[0] in rows:
                rows[r[0]][slot].append(r[1:])
    return rows


def _frozen(trial_id: int, number: int, state: TrialState, start, complete, params, values, user, system,
            intermediate) -> FrozenTrial:
    """The FrozenTrial Optuna's own reader makes of these rows."""
    from optuna.storages._rdb import models

    objectives: list[float] | None = None
    if values:
        objectives = [0.0] * len(values)
        for objective, value, kind in values:
            objectives[objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    distributions = {name: _distribution(text) for name, _, text in params}
    return FrozenTrial(
        number=number, state=state, value=None, values=objectives, datetime_start=start, datetime_complete=complete,
        params={name: distributions[name].to_external_repr(value) for name, value, _ in params},
        distributions=distributions,
        user_attrs={key: json.loads(value) for key, value in user},
        system_attrs={key: json.loads(value) for key, value in system},
        intermediate_values={step: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
                             for step, value, kind in intermediate},
        trial_id=trial_id)


@functools.lru_cache(maxsize=4096)
def _distribution(text: str) -> BaseDistribution:
    # a search's trials share a handful of distributions: parse each once (they are immutable)
    return optuna.distributions.json_to_distribution(text)


def _tune_sqlite(storage: RDBStorage) -> None:
    from sqlalchemy import event

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened before the listener reconnect with it


def _safe(url: str) -> str:
    """The URL without a password."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':', 1)[0]}@{tail}"


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


class BatchingStorage:
    """An Optuna storage whose per-field trial writes can be committed together.

    Everything is delegated to the wrapped storage, except that:

    - inside :meth:`batch` the writes of params and attributes are kept per trial and
      committed at the end of the block (a trial's buffer is also committed just before
      its state changes, since a finished trial accepts no more writes); reads of a trial
      see its buffered writes;
    - a RUNNING trial this process created or took from the queue is read from the
      database once and then kept up to date in memory as this process writes it, so
      asking, pruning and telling do not read it back again and again (nobody else
      writes a running trial while its worker lives; the database still refuses a write
      to a trial that has finished).
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage
        self._local = threading.local()
        self._own: dict[int, FrozenTrial | None] = {}  # trial id -> this process's copy (None: not read yet)
        self._own_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"_storage": self._storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_storage"])

    # -- trials this process runs -------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._storage.create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            with self._own_lock:
                self._own[trial_id] = None
        return trial_id

    def _update_own(self, trial_id: int, change) -> None:
        with self._own_lock:
            trial = self._own.get(trial_id)
            if trial is not None:
                change(trial)

    @property
    def backend(self) -> BaseStorage:
        """The real storage (an RDBStorage behind Optuna's cache, a JournalStorage, ...)."""
        return getattr(self._storage, "_backend", self._storage)

    # -- batching -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Buffer trial writes made in this thread until the block ends."""
        if getattr(self._local, "buffers", None) is not None:  # nested: the outer block commits
            yield
            return
        self._local.buffers = defaultdict(_Writes)
        try:
            yield
            for trial_id in list(self._local.buffers):
                self._flush(trial_id)
        finally:
            self._local.buffers = None

    def _buffer(self, trial_id: int) -> _Writes | None:
        buffers = getattr(self._local, "buffers", None)
        return None if buffers is None else buffers[trial_id]

    def _flush(self, trial_id: int) -> None:
        buffers = getattr(self._local, "buffers", None)
        writes = buffers.pop(trial_id, None) if buffers is not None else None
        if writes is None or not writes:
            return
        rdb = self.backend
        if isinstance(rdb, RDBStorage):
            _commit_rdb(rdb, trial_id, writes)
        else:
            for name, (internal, distribution) in writes.params.items():
                self._storage.set_trial_param(trial_id, name, internal, distribution)
            for key, value in writes.user_attrs.items():
                self._storage.set_trial_user_attr(trial_id, key, value)
            for key, value in writes.system_attrs.items():
                self._storage.set_trial_system_attr(trial_id, key, value)
        with self._own_lock:
            if self._own.get(trial_id) is not None:
                self._own[trial_id] = writes.apply(self._own[trial_id])

    # -- the writes that are buffered ---------------------------------------------------------
    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        writes = self._buffer(trial_id)
        if writes is not None:
            writes.params[param_name] = (param_value_internal, distribution)
            return
        self._storage.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        one = _Writes()
        one.params[param_name] = (param_value_internal, distribution)
        self._update_own(trial_id, lambda t: _replace(t, one.apply(t)))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        writes = self._buffer(trial_id)
        if writes is not None:
            writes.user_attrs[key] = value
            return
        self._storage.set_trial_user_attr(trial_id, key, value)
        self._update_own(trial_id, lambda t: t.user_attrs.__setitem__(key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        writes = self._buffer(trial_id)
        if writes is not None:
            writes.system_attrs[key] = value
            return
        self._storage.set_trial_system_attr(trial_id, key, value)
        self._update_own(trial_id, lambda t: t.system_attrs.__setitem__(key, value))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._storage.set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._update_own(trial_id, lambda t: t.intermediate_values.__setitem__(step, intermediate_value))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        self._flush(trial_id)
        changed = self._storage.set_trial_state_values(trial_id, state=state, values=values)
        with self._own_lock:
            if state == TrialState.RUNNING and changed:
                self._own[trial_id] = None  # taken from the queue: this process runs it now
            elif state.is_finished():
                self._own.pop(trial_id, None)
        return changed

    # -- reads see the buffer -------------------------------------------------------------------
    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._own_lock:
            own = trial_id in self._own
            trial = self._own.get(trial_id)
        if trial is None:
            trial = self._storage.get_trial(trial_id)
            if own and trial.state == TrialState.RUNNING:
                with self._own_lock:
                    if trial_id in self._own:
                        self._own[trial_id] = _copy(trial)
        else:
            trial = _copy(trial)
        buffers = getattr(self._local, "buffers", None)
        writes = buffers.get(trial_id) if buffers is not None else None
        return writes.apply(trial) if writes else trial


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose dicts can change without touching ``trial``'s."""
    import copy

    out = copy.copy(trial)
    out.params, out.distributions = dict(trial.params), dict(trial.distributions)
    out.user_attrs, out.system_attrs = dict(trial.user_attrs), dict(trial.system_attrs)
    out.intermediate_values = dict(trial.intermediate_values)
    return out


def _replace(target: FrozenTrial, source: FrozenTrial) -> None:
    target.params, target.distributions = source.params, source.distributions


class _Writes:
    """One trial's buffered writes."""

    def __init__(self) -> None:
        self.params: dict[str, tuple[float, BaseDistribution]] = {}
        self.user_attrs: dict[str, Any] = {}
        self.system_attrs: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self.params or self.user_attrs or self.system_attrs)

    def apply(self, trial: FrozenTrial) -> FrozenTrial:
        import copy

        trial = copy.copy(trial)
        trial.params = {**trial.params, **{n: d.to_external_repr(v) for n, (v, d) in self.params.items()}}
        trial.distributions = {**trial.distributions, **{n: d for n, (_, d) in self.params.items()}}
        trial.user_attrs = {**trial.user_attrs, **self.user_attrs}
        trial.system_attrs = {**trial.system_attrs, **self.system_attrs}
        return trial


def _commit_rdb(rdb: RDBStorage, trial_id: int, writes: _Writes) -> None:
    """All of one trial's buffered writes in one transaction: one upsert statement per table."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        if writes.params:
            rows = [{"trial_id": trial_id, "param_name": name, "param_value": internal,
                     "distribution_json": distribution_to_json(distribution)}
                    for name, (internal, distribution) in writes.params.items()]
            _upsert(session, rdb, models.TrialParamModel, rows, ("trial_id", "param_name"),
                    ("param_value", "distribution_json"))
        for model, attrs in ((models.TrialUserAttributeModel, writes.user_attrs),
                             (models.TrialSystemAttributeModel, writes.system_attrs)):
            if attrs:
                rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                        for key, value in attrs.items()]
                _upsert(session, rdb, model, rows, ("trial_id", "key"), ("value_json",))


def _upsert(session, rdb: RDBStorage, model, rows: list[dict[str, Any]], keys: tuple[str, ...],
            updates: tuple[str, ...]) -> None:
    """INSERT ... ON CONFLICT UPDATE of several rows in one statement (SQLite, PostgreSQL, MySQL)."""
    dialect = rdb.engine.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(model).values(rows)
        statement = statement.on_conflict_do_update(index_elements=list(keys),
                                                    set_={c: getattr(statement.excluded, c) for c in updates})
    elif dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert

        statement = insert(model).values(rows)
        statement = statement.on_duplicate_key_update({c: getattr(statement.inserted, c) for c in updates})
    else:  # another database: the ORM, row by row, still in this one transaction
        for row in rows:
            session.merge(model(**row))
        return
    session.execute(statement)
