"""A wrapper that makes any Optuna sampler propose architectures not yet in the study."""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from nas.controllers._base import FoldingSampler, Key, StudyLog, check_seed
from nas.controllers.evolution import mutate

__all__ = ["DistinctSampler", "distinct"]


def distinct(
    sampler: BaseSampler,
    distributions: Mapping[str, BaseDistribution],
    *,
    max_tries: int = 100,
    seed: int | None = None,
) -> BaseSampler:
    """Make ``sampler`` propose only architectures the study does not hold yet.

    Our controllers (evolution, reinforce) already do so natively, with their own
    ``max_tries``, and are returned unchanged; any other sampler is wrapped in a
    :class:`DistinctSampler`.

    Args:
        sampler: The sampler to wrap.
        distributions: The decisions every trial asks, e.g. a search space's
            ``CategoricalDistribution`` per decision name.
        max_tries: Proposals drawn per trial before settling for a repeat.
        seed: Seed of the walk away from a proposal the base sampler keeps repeating.

    Returns:
        A sampler that proposes distinct architectures.

    Raises:
        ValueError: ``distributions`` is empty, ``max_tries`` < 1 or ``seed`` is invalid.
    """
    if isinstance(sampler, FoldingSampler):
        return sampler
    return DistinctSampler(sampler, distributions, max_tries=max_tries, seed=seed)


class DistinctSampler(BaseSampler):
    """Redraws the base sampler's proposal while the study already holds it.

    The relative search space is ``distributions``: each trial draws every decision at
    once, the base sampler's relative parameters plus its independent draws for the rest,
    and draws again while that architecture is in the study (finished in any state but
    an interrupted FAIL, running, or queued). A sampler that maximises an acquisition
    (TPE) tends to return the same proposal on every draw; once a draw repeats one of
    this trial's, the base is not asked again and the proposal instead walks away by
    one-decision mutations (:func:`~nas.controllers.mutate`), staying near what the base
    preferred. After ``max_tries`` candidates the last one stands and the study records
    a repeat. The study's trials are folded into the set of seen architectures once
    each, so an ask costs the same at any study size.

    Args:
        base: The sampler that proposes.
        distributions: The decisions every trial asks.
        max_tries: Candidates per trial before settling for a repeat.
        seed: Seed of the walk; everything random about it in trial N comes from
            (seed, N). None means 0: the base sampler's seed already varies the walk's
            starting point.

    Raises:
        ValueError: ``distributions`` is empty, ``max_tries`` < 1 or ``seed`` is invalid.
    """

    def __init__(
        self,
        base: BaseSampler,
        distributions: Mapping[str, BaseDistribution],
        *,
        max_tries: int = 100,
        seed: int | None = None,
    ) -> None:
        if not distributions:
            raise ValueError("distributions is empty: give the decisions every trial asks")
        if max_tries < 1:
            raise ValueError(f"max_tries={max_tries!r} must be >= 1")
        self._base = base
        self._distributions = dict(distributions)
        self._max_tries = max_tries
        self._seed = check_seed(seed) or 0
        self._lock = threading.Lock()
        self._log: StudyLog | None = None

    @property
    def base(self) -> BaseSampler:
        """The wrapped sampler."""
        return self._base

    def reseed_rng(self) -> None:
        self._base.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._base.after_trial(study, trial, state, values)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        base_space = self._base.infer_relative_search_space(study, trial)
        with self._lock:
            pending = self._sync(study)
            assert self._log is not None
            params = self._draw(study, trial, search_space, base_space)
            tried: set[Key] = set()
            walking, rng = False, np.random.default_rng([self._seed, trial.number])
            for _ in range(self._max_tries - 1):
                key = self._key(params)
                if key is None or (key not in self._log.seen and key not in pending):
                    break
                walking = walking or key in tried
                tried.add(key)
                if walking:
                    params = mutate(params, search_space, rng)
                else:
                    params = self._draw(study, trial, search_space, base_space)
            return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_log")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._log = None

    def _draw(
        self,
        study: Study,
        trial: FrozenTrial,
        search_space: Mapping[str, BaseDistribution],
        base_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        drawn = self._base.sample_relative(study, trial, base_space) if base_space else {}
        return {
            name: drawn[name]
            if name in drawn
            else self._base.sample_independent(study, trial, name, dist)
            for name, dist in search_space.items()
        }

    def _key(self, params: Mapping[str, Any]) -> Key | None:
        # Parameters that do not fix every decision are not an architecture of the space.
        if any(n not in params for n in self._distributions):
            return None
        return frozenset((n, params[n]) for n in self._distributions)

    def _sync(self, study: Study) -> set[Key]:
        trials = study._get_trials(deepcopy=False, use_cache=True)
        if self._log is None or not self._log.follows(study) or len(trials) < self._log.watermark:
            self._log = StudyLog(study, self._key)
        return self._log.update(trials, lambda trial: None)
