"""What our controllers share: per-trial randomness and a study folded once, in order.

Every controller of ours is an Optuna sampler whose proposal for trial N is a function of
(seed, N, study) only: everything random about trial N comes from
``default_rng([seed, N])``, and the learnt state is a fold of the study's finished trials
in trial-number order. A trial is folded exactly once, as soon as every trial below it has
finished (the *watermark*), so an ask costs the same at trial 10 and at trial 10,000, and
a resumed study or a second worker reaches exactly the state of one uninterrupted process.

The study conventions of ``nas.search`` are honoured, and nothing depends on them: a trial
that failed with a reason starting "interrupted" is ignored (its architecture is queued
again); any other FAIL, an infeasible candidate included, is an architecture with no
result; an architecture folded before (a repeat) teaches nothing new.
"""
from __future__ import annotations

import itertools
import numbers
import secrets
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "FoldingSampler", "Outcome", "StudyLog", "check_seed", "is_interrupted", "params_key", "uniform"
]

# The (name, value) pairs of an architecture: equal keys, same architecture.
Key = frozenset


def params_key(params: Mapping[str, Any]) -> Key:
    """The key of an architecture given by its parameter values."""
    return frozenset(params.items())


def is_interrupted(trial: FrozenTrial) -> bool:
    """A trial cut off from outside (``nas.search`` queues its architecture again)."""
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("reason", "")).startswith(
        "interrupted"
    )


def _is_infeasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("reason", "")).startswith(
        "infeasible"
    )


def check_seed(seed: Any) -> int | None:
    """Return ``seed`` as a plain int (numpy integers accepted), or None.

    Raises:
        ValueError: ``seed`` is not a non-negative integer or None.
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int or None")
    return int(seed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one finished trial teaches a controller.

    Attributes:
        number: The trial's number.
        params: Its parameter values.
        distributions: Their distributions.
        values: Its objective values as recorded, or None when it has no result: failed,
            infeasible, or pruned without a value.
    """

    number: int
    params: Mapping[str, Any]
    distributions: Mapping[str, BaseDistribution]
    values: tuple[float, ...] | None


class StudyLog:
    """Follows one study: folds each finished trial once, in number order.

    Trials below :attr:`watermark` have all finished and been folded. :attr:`seen` holds
    the key of every finished trial except the interrupted ones, also those finished above
    the watermark (a set does not care about order), each added once. ``key_of`` returns
    None for parameters that are not an architecture (they are never seen).
    """

    def __init__(self, study: Study, key_of: Callable[[Mapping[str, Any]], Key | None]) -> None:
        self._storage, self._study_id = study._storage, study._study_id
        self._key_of = key_of
        self.watermark = 0
        self.seen: set[Key] = set()
        self._seen_ahead: set[int] = set()  # numbers above the watermark already in `seen`

    def follows(self, study: Study) -> bool:
        """Whether ``study`` is the study this log follows (a Hyperband bracket view is)."""
        return study._storage is self._storage and study._study_id == self._study_id

    def update(self, trials: list[FrozenTrial], fold: Callable[[FrozenTrial], None]) -> set[Key]:
        """Fold the trials that newly passed the watermark; return the unfinished ones' keys.

        Args:
            trials: Every trial of the study, in number order (as storages return them).
            fold: Called once per finished trial, in number order; never for an
                interrupted one.

        Returns:
            The keys of the RUNNING and WAITING trials: taken, but not yet finished.
        """
        while self.watermark < len(trials) and trials[self.watermark].state.is_finished():
            trial = trials[self.watermark]
            assert trial.number == self.watermark, "a study's trials are numbered 0, 1, ..."
            if not is_interrupted(trial):
                self._see(trial)
                fold(trial)
            self._seen_ahead.discard(trial.number)
            self.watermark += 1
        pending: set[Key] = set()
        for trial in trials[self.watermark :]:
            if trial.state.is_finished():
                if not is_interrupted(trial) and trial.number not in self._seen_ahead:
                    self._see(trial)
                    self._seen_ahead.add(trial.number)
            else:
                # A queued (WAITING) trial holds its architecture in "fixed_params".
                params = trial.params or trial.system_attrs.get("fixed_params")
                key = self._key_of(params) if params else None
                if key is not None:
                    pending.add(key)
        return pending

    def _see(self, trial: FrozenTrial) -> None:
        key = self._key_of(trial.params) if trial.params else None
        if key is not None:
            self.seen.add(key)


class FoldingSampler(BaseSampler):
    """Base of our controllers: a seeded, resumable sampler over categorical decisions.

    Subclasses say which studies they support (:meth:`_check_study`), what state they
    learn (:meth:`_new_model`, :meth:`_learn`) and what they propose
    (:meth:`_proposals`). This class folds the study into that state, keeps the relative
    search space (the categorical decisions every evaluated trial shares), draws
    non-categorical parameters at random, and skips proposals of architectures the
    study already holds, up to ``max_tries`` draws.

    Args:
        seed: Seed of every random draw; None draws one at construction.
        max_tries: Proposals drawn per trial before settling for an architecture the study
            already holds.

    Raises:
        ValueError: ``seed`` is not a non-negative integer or None, or ``max_tries`` < 1.
    """

    def __init__(self, seed: int | None, max_tries: int) -> None:
        seed = check_seed(seed)
        if max_tries < 1:
            raise ValueError(f"max_tries={max_tries!r} must be >= 1")
        self._seeded = seed is not None
        self._seed = secrets.randbits(63) if seed is None else seed
        self._max_tries = max_tries
        self._lock = threading.Lock()
        self._reset()

    # -- what a subclass provides ---------------------------------------------------------
    def _check_study(self, study: Study) -> None:
        """Raise ValueError, saying what to use instead, for a study this sampler cannot serve."""

    def _new_model(self) -> Any:
        """The state before any trial is learnt."""
        raise NotImplementedError

    def _learn(self, model: Any, outcome: Outcome) -> None:
        """Fold one outcome into the model (called once per architecture, in number order)."""
        raise NotImplementedError

    def _proposals(
        self, model: Any, space: Mapping[str, CategoricalDistribution], rng: np.random.Generator
    ) -> Iterator[dict[str, Any]]:
        """Candidates for one trial, best first; the first not yet in the study wins."""
        raise NotImplementedError

    # -- Optuna's sampler interface --------------------------------------------------------
    def reseed_rng(self) -> None:
        # Optuna reseeds before n_jobs > 1 threads start. Draws are keyed on the trial
        # number, so a fixed seed stays as it is (resume stays exact); only a seed that was
        # drawn at random is drawn again.
        if not self._seeded:
            self._seed = secrets.randbits(63)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        try:
            self._check_study(study)
        except ValueError as err:
            # ask() has already created the trial: end it rather than leave it RUNNING.
            study._storage.set_trial_user_attr(trial._trial_id, "reason", f"sampler: {err}")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            raise

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._check_study(study)
        with self._lock:
            self._sync(study)
            return dict(self._space or {})

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._check_study(study)
        with self._lock:
            pending = self._sync(study)
            known = self._space or {}
            # The model speaks only for the decisions every evaluated trial shares.
            ours = {n: d for n, d in search_space.items() if known.get(n) == d}
            params = {
                n: self._draw_independent(study, trial, n, d)
                for n, d in search_space.items()
                if n not in ours
            }
            if ours:
                params.update(self._distinct(ours, self._rng(trial.number), pending))
            return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._check_study(study)
        return self._draw_independent(study, trial, param_name, param_distribution)

    # -- pickling: the learnt state is derived data, rebuilt from the study ----------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_log", "_space", "_model", "_learnt", "_signs"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._reset()

    # -- helpers ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self._log: StudyLog | None = None
        self._space: dict[str, CategoricalDistribution] | None = None
        self._model: Any = None
        self._learnt: set[Key] = set()
        self._signs: tuple[float, ...] = ()

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, *keys])

    def _sync(self, study: Study) -> set[Key]:
        """Fold the trials finished since the last call; return the pending trials' keys."""
        # One read per ask: Optuna caches the trial list until the next ask or tell.
        trials = study._get_trials(deepcopy=False, use_cache=True)
        if self._log is None or not self._log.follows(study) or len(trials) < self._log.watermark:
            self._reset()
            self._log = StudyLog(study, params_key)
            self._model = self._new_model()
            self._signs = tuple(
                1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions
            )
        return self._log.update(trials, self._fold)

    def _fold(self, trial: FrozenTrial) -> None:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or _is_infeasible(trial):
            self._space = _intersect(self._space, trial.distributions)
        key = params_key(trial.params)
        if not trial.params or key in self._learnt:
            return  # nothing to learn about, or a repeat: each architecture teaches once
        self._learnt.add(key)
        values = trial.values if trial.state != TrialState.FAIL else None
        outcome = Outcome(
            trial.number, trial.params, trial.distributions, None if values is None else tuple(values)
        )
        self._learn(self._model, outcome)

    def _distinct(
        self,
        space: Mapping[str, CategoricalDistribution],
        rng: np.random.Generator,
        pending: set[Key],
    ) -> dict[str, Any]:
        assert self._log is not None
        seen = self._log.seen
        proposal: dict[str, Any] = {}
        for proposal in itertools.islice(self._proposals(self._model, space, rng), self._max_tries):
            key = params_key(proposal)
            if key not in seen and key not in pending:
                break
        # Past the bound the last draw stands; the study's ledger records the repeat.
        return proposal

    def _draw_independent(
        self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        # Keyed on the name too, so the parameters of one trial are independent draws.
        rng = self._rng(trial.number, zlib.crc32(name.encode()))
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(rng.integers(len(dist.choices)))]
        fallback = RandomSampler(seed=int(rng.integers(2**32)))
        return fallback.sample_independent(study, trial, name, dist)

    def _oriented(self, values: tuple[float, ...]) -> tuple[float, ...]:
        """``values`` turned so that larger is better in every objective."""
        return tuple(s * v for s, v in zip(self._signs, values))


def uniform(
    space: Mapping[str, CategoricalDistribution], rng: np.random.Generator
) -> dict[str, Any]:
    """One architecture drawn uniformly: every decision independently."""
    picks = rng.integers(0, [len(d.choices) for d in space.values()])
    return {n: d.choices[int(i)] for (n, d), i in zip(space.items(), picks)}


def _intersect(
    space: dict[str, CategoricalDistribution] | None, distributions: Mapping[str, BaseDistribution]
) -> dict[str, CategoricalDistribution]:
    if space is None:
        return {n: d for n, d in distributions.items() if isinstance(d, CategoricalDistribution)}
    if all(distributions.get(n) == d for n, d in space.items()):
        return space  # the common case: every trial asks the same decisions
    return {n: d for n, d in space.items() if distributions.get(n) == d}
