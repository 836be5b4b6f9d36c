"""The study protocol, written once for every backend (design, decisions 1, 6, 7).

A :class:`Ledger` is what a process that proposes or records candidates holds. It owns:

- the **ask lock** (a file lock in the run directory, plus an advisory lock in PostgreSQL
  for drivers on other hosts), under which the budget is counted and a proposal made;
- the **budget** of distinct architectures: ``trials: N`` ends with N distinct
  architectures evaluated (COMPLETE, PRUNED, or FAIL for a reason of the candidate's own).
  Repeats, infeasible candidates and interrupted trials use none of it;
- **ask → dedup**: a new architecture is returned to be evaluated; one that is training
  elsewhere right now is returned as a *twin* to wait for; one already finished is
  recorded at once as a repeat (``duplicate_of``) with the known result, which the
  controller is told like any other;
- the **escape**: after 20 repeats or infeasible candidates in a row the next candidate
  is drawn uniformly from the architectures not yet in the study (``escape`` says so);
- **record**, **report** (per-epoch accuracy, the pruner's decision) and **interrupted**:
  a trial cut off from outside ends FAIL "interrupted: ..." and its architecture is
  queued again (a WAITING trial that the next ask pops first).

The ledger keeps an index of the study that it brings up to date incrementally: every
sync reads only the trials that changed since the last one (Optuna's cached storage) and
folds each finished trial once, so the work per trial does not grow with the study.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.spaces import SearchSpace
from nas.study import is_finished, is_infeasible, is_interrupted, worker_alive, worker_id

__all__ = ["Ledger", "Proposal", "ESCAPE_AFTER", "ask_lock", "enqueue", "interrupted_reason", "objective_values"]

ESCAPE_AFTER = 20  # repeats or infeasible candidates in a row before a forced unseen architecture
_ESCAPE_DRAWS = 1000


def interrupted_reason(why: str) -> str:
    return f"interrupted: {why}"


@dataclass(frozen=True)
class Proposal:
    """A trial to work on: evaluate ``arch``, or wait for its ``twin`` that trains it now."""

    trial_id: int
    number: int
    params: dict[str, Any]
    arch: str
    twin: int | None = None
    baseline: bool = False


# -- the ask lock ------------------------------------------------------------------------------
@contextlib.contextmanager
def ask_lock(lock_path: Path, study: optuna.Study | None) -> Iterator[None]:
    """Serialises "count the budget, then propose" among every process of a study.

    The run directory's file lock covers the processes of one host; on PostgreSQL an
    advisory lock in the database also covers drivers on other hosts. Without a study
    (while one is being created) only the file lock is taken.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with _database_lock(study) if study is not None else contextlib.nullcontext():
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _database_lock(study: optuna.Study) -> Iterator[None]:
    backend = getattr(study._storage, "backend", study._storage)
    engine = getattr(backend, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
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


# -- the index ---------------------------------------------------------------------------------
class _Index:
    """What the budget, dedup and the escape need, folded from the study trial by trial.

    ``owner`` maps an architecture to the trial that evaluates (or evaluated) it: the first
    trial of that architecture that is neither a recorded repeat nor interrupted. Finished
    trials below the watermark are folded once and never looked at again.
    """

    def __init__(self) -> None:
        self.owner: dict[str, int] = {}
        self.counted: set[int] = set()       # owners that finished with the candidate's own result
        self.watermark = 0                   # every trial below it is finished and folded
        self.folded: set[int] = set()        # finished trials at or above the watermark, folded
        self.open: dict[int, FrozenTrial] = {}  # unfinished trials at or above the watermark
        self.trials: list[FrozenTrial] = []  # the latest snapshot, by number
        self.finished: list[FrozenTrial] = []  # folded since the last take_finished()

    def sync(self, trials: list[FrozenTrial]) -> None:
        self.trials = trials
        self.open = {}
        for trial in trials[self.watermark:]:
            if trial.state.is_finished():
                if trial.number not in self.folded:
                    self._fold(trial)
                    self.folded.add(trial.number)
                    self.finished.append(trial)
            else:
                self.open[trial.number] = trial
                self._claim(trial)
        while self.watermark in self.folded:
            self.folded.discard(self.watermark)
            self.watermark += 1

    def _claim(self, trial: FrozenTrial) -> None:
        arch = trial.user_attrs.get("arch")
        if arch is not None and trial.user_attrs.get("duplicate_of") is None:
            self.owner.setdefault(arch, trial.number)

    def _fold(self, trial: FrozenTrial) -> None:
        arch = trial.user_attrs.get("arch")
        if arch is None or trial.user_attrs.get("duplicate_of") is not None:
            return
        if is_interrupted(trial):
            if self.owner.get(arch) == trial.number:
                del self.owner[arch]  # its architecture is queued again
            return
        self.owner.setdefault(arch, trial.number)
        if self.owner[arch] == trial.number and is_finished(trial):
            self.counted.add(trial.number)

    def used(self) -> int:
        """Distinct architectures finished by their own result or training now."""
        running = sum(1 for t in self.open.values() if t.state == TrialState.RUNNING
                      and self.owner.get(t.user_attrs.get("arch")) == t.number)
        return len(self.counted) + running

    def waiting(self) -> list[FrozenTrial]:
        return [t for t in self.open.values() if t.state == TrialState.WAITING]

    def streak(self) -> int:
        """Repeats and infeasible candidates in a row at the end of the study (interrupted ones skipped)."""
        count = 0
        for trial in reversed(self.trials):
            if count >= ESCAPE_AFTER:
                break
            if is_interrupted(trial):
                continue
            arch = trial.user_attrs.get("arch")
            repeat = trial.user_attrs.get("duplicate_of") is not None or (
                arch is not None and self.owner.get(arch, trial.number) != trial.number)
            if not (repeat or is_infeasible(trial)):
                break
            count += 1
        return count


# -- the ledger --------------------------------------------------------------------------------
class Ledger:
    """The study protocol for one process: propose, dedup, record, report, requeue.

    Args:
        study: The run's study, its sampler set (the controller).
        space: The search space (decisions and architectures).
        trials: The budget of distinct architectures.
        objectives: The objective names the study optimizes (``reward``, or accuracy,
            step_time, params).
        lock_path: The run directory's ask-lock file.
        seed: The experiment's seed (the escape's draws).
        pruner: Decides per epoch; None or Optuna's NopPruner never stops a trial.
        pruner_name: The pruner's name in the experiment (for the ledger's reasons).
    """

    def __init__(self, study: optuna.Study, space: SearchSpace, *, trials: int, objectives: tuple[str, ...],
                 lock_path: Path, seed: int, pruner: optuna.pruners.BasePruner | None = None,
                 pruner_name: str = "none") -> None:
        self.study, self.space, self.trials, self.objectives = study, space, trials, objectives
        self.lock_path, self.seed, self.pruner, self.pruner_name = lock_path, seed, pruner, pruner_name
        self.distributions = {d.name: CategoricalDistribution(d.choices) for d in space.decisions}
        self.worker = worker_id()
        self._index = _Index()

    # -- reading -------------------------------------------------------------------------------
    def sync(self) -> list[FrozenTrial]:
        """Bring the index up to date (reads only what changed) and return the trials by number."""
        trials = self.study._storage.get_all_trials(self.study._study_id, deepcopy=False)
        self._index.sync(trials)
        return trials

    def budget_left(self) -> int:
        return self.trials - self._index.used()

    def open_trials(self) -> list[FrozenTrial]:
        """RUNNING and WAITING trials as of the last sync."""
        return list(self._index.open.values())

    def counted(self) -> int:
        """Distinct architectures evaluated (the budget's count) as of the last sync."""
        return len(self._index.counted)

    def take_finished(self) -> list[FrozenTrial]:
        """Trials that finished since the last call (as of the last sync), in the order seen."""
        finished, self._index.finished = self._index.finished, []
        return finished

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with ask_lock(self.lock_path, self.study):
            yield

    # -- asking --------------------------------------------------------------------------------
    def ask(self) -> Proposal | None:
        """The next trial to work on, or None when the budget is used (or being used) up.

        Repeats of finished architectures are recorded here (and told to the controller);
        asking goes on until a proposal needs work.
        """
        while True:
            with self.locked():
                self.sync()
                if self.budget_left() <= 0:
                    return None
                proposal = self._propose()
            if proposal.twin is None:
                return proposal
            outcome = self.twin_outcome(proposal)
            if outcome is None:
                return proposal  # the twin trains right now: the caller waits for its result
            if outcome == "train":
                return self.train_instead_of_twin(proposal)
            self.record_repeat(proposal, outcome)

    def _propose(self) -> Proposal:
        waiting = sorted(self._index.waiting(), key=lambda t: t.number)
        for trial in waiting:
            if self.study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                self.study._storage.set_trial_user_attr(trial._trial_id, "worker", self.worker)
                return self._proposal(trial._trial_id, trial.number, trial.params, trial.user_attrs)
        if self._index.streak() >= ESCAPE_AFTER:
            return self._escape()
        return self._ask_controller()

    def _ask_controller(self) -> Proposal:
        """A new trial with the controller's proposal: what ``Study.ask`` does, minus two reads.

        The ledger pops WAITING trials itself (``Study.ask`` would scan the study for them
        once more), and the sampler, which reads the study through Optuna's per-ask trial
        cache, is handed the snapshot this ask has just read instead of reading it again.
        """
        study, storage = self.study, self.study._storage
        before = len(self._index.trials)
        study._thread_local.cached_all_trials = self._index.trials
        try:
            with storage.batch():
                trial = optuna.Trial(study, storage.create_new_trial(study._study_id))
                params = {name: trial.suggest_categorical(name, dist.choices)
                          for name, dist in self.distributions.items()}
                arch = str(self.space.from_decisions(params))
                trial.set_user_attr("arch", arch)
                trial.set_user_attr("worker", self.worker)
        except BaseException as err:  # Ctrl-C too: never leave a half-made trial RUNNING
            message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            self._fail_orphans(before, f"the controller failed: {message}")
            raise
        finally:
            study._thread_local.cached_all_trials = None
        return self._proposal(trial._trial_id, trial.number, params, {"arch": arch})

    def _escape(self) -> Proposal:
        """A uniform draw among the architectures not yet in the study, past the controller."""
        number = len(self._index.trials)
        rng = random.Random(f"escape:{self.seed}:{number}")  # str seeds are stable across processes
        arch = None
        for _ in range(_ESCAPE_DRAWS):
            candidate = self.space.sample(rng)
            if str(candidate) not in self._index.owner:
                arch = candidate
                break
        if arch is None:
            arch = next((a for a in _enumerate(self.space) if str(a) not in self._index.owner), None)
        if arch is None:
            raise RuntimeError(f"every architecture of space {self.space.name!r} is in the study already; "
                               f"the budget of {self.trials} cannot be met")
        params = self.space.to_decisions(arch)
        attrs = {"arch": str(arch), "worker": self.worker,
                 "escape": f"drawn uniformly among unseen architectures after {ESCAPE_AFTER} repeats or "
                           "infeasible candidates in a row"}
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params,
                                             distributions={n: self.distributions[n] for n in params}, user_attrs=attrs)
        trial_id = self.study._storage.create_new_trial(self.study._study_id, template_trial=template)
        number = self.study._storage.get_trial(trial_id).number
        return self._proposal(trial_id, number, params, attrs)

    def _proposal(self, trial_id: int, number: int, params: dict[str, Any], attrs: dict[str, Any]) -> Proposal:
        arch = attrs["arch"]
        owner = self._index.owner.setdefault(arch, number)
        twin = owner if owner != number else None
        return Proposal(trial_id=trial_id, number=number, params=dict(params), arch=arch, twin=twin,
                        baseline=bool(attrs.get("baseline")))

    def _fail_orphans(self, first: int, why: str) -> None:
        """Trials this process created but could not fill in end FAIL (not left RUNNING)."""
        for trial in self.study._storage.get_all_trials(self.study._study_id, deepcopy=False)[first:]:
            if trial.state == TrialState.RUNNING and "arch" not in trial.user_attrs:
                self.study._storage.set_trial_user_attr(trial._trial_id, "reason", interrupted_reason(why))
                self.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    # -- twins ---------------------------------------------------------------------------------
    def twin_outcome(self, proposal: Proposal) -> FrozenTrial | str | None:
        """The twin's finished trial (reuse its result), ``"train"`` (it was interrupted: train
        the architecture here) or None (it is still training)."""
        twin = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, proposal.twin))
        if twin.state in (TrialState.RUNNING, TrialState.WAITING):
            return None
        if is_interrupted(twin):
            return "train"
        return twin

    def train_instead_of_twin(self, proposal: Proposal) -> Proposal:
        """The twin was interrupted: this trial owns the architecture now."""
        self._index.owner[proposal.arch] = proposal.number
        return Proposal(proposal.trial_id, proposal.number, proposal.params, proposal.arch, None, proposal.baseline)

    # -- recording -----------------------------------------------------------------------------
    def record(self, proposal: Proposal, attrs: dict[str, Any]) -> None:
        """End the trial in ``attrs["state"]`` with the ledger attributes (the next sync reads it back)."""
        attrs = dict(attrs)
        state = attrs.pop("state")
        storage = self.study._storage
        with storage.batch():
            for key, value in attrs.items():
                if value is not None:
                    storage.set_trial_user_attr(proposal.trial_id, key, value)
        if state == "COMPLETE":
            self.study.tell(proposal.number, objective_values(self.objectives, attrs))
        else:
            self.study.tell(proposal.number, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)

    def record_repeat(self, proposal: Proposal, original: FrozenTrial) -> None:
        """End ``proposal`` with the result of ``original`` (same architecture, finished)."""
        attrs = {k: v for k, v in original.user_attrs.items() if k not in ("worker", "baseline", "retry_of", "escape")}
        attrs.update(state=original.state.name, duplicate_of=original.number)
        self.record(proposal, attrs)

    def measured(self, proposal: Proposal, attrs: dict[str, Any]) -> None:
        """What is known before training (params, MACs, S), for a pruner that ranks on it (mo_asha).

        Without an active pruner nothing is written: the record carries the same figures.
        """
        if self.pruner is None or isinstance(self.pruner, optuna.pruners.NopPruner):
            return
        storage = self.study._storage
        with storage.batch():
            for key, value in attrs.items():
                if value is not None:
                    storage.set_trial_user_attr(proposal.trial_id, key, value)

    def report(self, proposal: Proposal, epoch: int, accuracy: float) -> str | None:
        """Record one epoch's accuracy; the reason when the pruner stops the trial now, else None."""
        from nas.pruners import stop_reason

        if self.pruner is None or isinstance(self.pruner, optuna.pruners.NopPruner):
            return None
        storage = self.study._storage
        storage.set_trial_intermediate_value(proposal.trial_id, epoch, accuracy)
        if not self.pruner.prune(self.study, storage.get_trial(proposal.trial_id)):
            return None
        return stop_reason(self.pruner, self.pruner_name, epoch, accuracy)

    # -- faults --------------------------------------------------------------------------------
    def fail_interrupted(self, proposal_or_trial: Proposal | FrozenTrial, why: str) -> None:
        """End a trial cut off from outside; its architecture goes back in the queue."""
        storage = self.study._storage
        trial_id = proposal_or_trial.trial_id if isinstance(proposal_or_trial, Proposal) else proposal_or_trial._trial_id
        trial = storage.get_trial(trial_id)
        if trial.state.is_finished():
            return
        storage.set_trial_user_attr(trial_id, "reason", interrupted_reason(why))
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if trial.params and trial.user_attrs.get("arch"):
            self._requeue(trial)

    def _requeue(self, trial: FrozenTrial) -> None:
        attrs: dict[str, Any] = {"retry_of": trial.number}
        if trial.user_attrs.get("baseline"):
            attrs["baseline"] = True
        enqueue(self.study, self.space, trial.user_attrs["arch"], attrs)

    def requeue_dead(self, alive: Callable[[str | None], bool] = worker_alive) -> int:
        """RUNNING trials whose worker is gone end FAIL "interrupted"; their architectures are queued again."""
        count = 0
        with self.locked():
            for trial in self.study._storage.get_all_trials(self.study._study_id, deepcopy=False,
                                                            states=(TrialState.RUNNING,)):
                worker = trial.user_attrs.get("worker")
                if not alive(worker):
                    self.fail_interrupted(trial, f"worker {worker or 'unknown'} stopped (killed or lost) before "
                                                 "reporting")
                    count += 1
        return count

    def cancel_leftovers(self) -> int:
        """WAITING trials left once the budget is met end FAIL, so that nothing stays open."""
        count = 0
        with self.locked():
            self.sync()
            if self.budget_left() > 0 or any(t.state == TrialState.RUNNING for t in self._index.open.values()):
                return 0
            for trial in self._index.waiting():
                storage = self.study._storage
                if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    storage.set_trial_user_attr(trial._trial_id, "reason",
                                                interrupted_reason("not needed: the budget was met first"))
                    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                    count += 1
        return count


def enqueue(study: optuna.Study, space: SearchSpace, arch, user_attrs: dict[str, Any]) -> None:
    """Queue ``arch`` as a WAITING trial (params and attributes written in one transaction).

    The next ask pops it before the controller is asked. Call it under the ask lock, or
    where nobody else asks (a study being created).
    """
    params = space.to_decisions(arch)
    distributions = {d.name: CategoricalDistribution(d.choices) for d in space.decisions if d.name in params}
    template = optuna.trial.create_trial(state=TrialState.WAITING, params=params, distributions=distributions,
                                         user_attrs={"arch": str(arch), **user_attrs})
    study._storage.create_new_trial(study._study_id, template_trial=template)


def _enumerate(space: SearchSpace) -> Iterator[Any]:
    import itertools

    names = [d.name for d in space.decisions]
    for values in itertools.product(*(d.choices for d in space.decisions)):
        yield space.from_decisions(dict(zip(names, values)))


def objective_values(objectives: tuple[str, ...], attrs: dict[str, Any]) -> list[float]:
    """The study's objective values from a trial's ledger attributes."""
    values = [float(attrs[name]) for name in objectives]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"objective values {values} hold NaN")
    return values
