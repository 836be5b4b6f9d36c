"""Regularized (aging) evolution as an Optuna sampler (Real et al. 2019).

The population is the last ``population_size`` completed trials of the study, so the
sampler keeps no state of its own: resume and several workers on one storage just work.
This module also holds the small base class both of our controllers share, because it
needs nothing heavier than numpy and Optuna.
"""
from __future__ import annotations

import secrets
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import intersection_search_space
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["EvolutionSampler", "mutate"]


def mutate(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Return a copy of ``params`` with exactly one categorical decision changed.

    The decision is drawn uniformly among those with more than one choice, and its new
    value uniformly among the other choices. Non-categorical parameters are never
    touched; with no mutable decision the copy is returned unchanged.

    Args:
        params: Parameter values in their native (external) form.
        distributions: The distribution of every decision, e.g. a trial's search space.
        rng: Source of randomness.

    Returns:
        The mutated copy; ``params`` itself is left alone.

    Raises:
        ValueError: A mutable decision is missing from ``params`` or holds a value that is
            not one of its choices.
    """
    mutable = [
        name
        for name, dist in distributions.items()
        if isinstance(dist, CategoricalDistribution) and len(dist.choices) > 1
    ]
    child = dict(params)
    if not mutable:
        return child
    name = mutable[int(rng.integers(len(mutable)))]
    dist = distributions[name]
    current = _choice_index(dist, params, name)
    # Draw among the other n - 1 choices and skip over the current one.
    other = int(rng.integers(len(dist.choices) - 1))
    child[name] = dist.choices[other + (other >= current)]
    return child


def _choice_index(dist: CategoricalDistribution, params: Mapping[str, Any], name: str) -> int:
    if name not in params:
        raise ValueError(
            f"parameter {name!r} is missing from params {sorted(params)}; pass a value for "
            "every decision of the search space"
        )
    try:
        return int(dist.to_internal_repr(params[name]))
    except ValueError:
        raise ValueError(
            f"value {params[name]!r} of {name!r} is not one of its choices {dist.choices}"
        ) from None


class _TrialSeededSampler(BaseSampler):
    """Shared plumbing: per-trial randomness and state rebuilt from finished trials.

    Everything random about trial N comes from ``default_rng([seed, N])``, so a resumed
    study or a second worker proposes exactly what one uninterrupted process would.
    """

    def __init__(self, seed: int | None) -> None:
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed={seed!r} must be a non-negative int or None")
        # Drawn once: an unseeded sampler is still consistent with itself across calls.
        self._seed = secrets.randbits(63) if seed is None else seed

    def reseed_rng(self) -> None:
        # Optuna calls this per thread for n_jobs > 1; our streams are already keyed on
        # the trial number, and reseeding would break resume, so there is nothing to do.
        pass

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._check_single_objective(study)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._check_single_objective(study)
        return self._search_space(self._completed(study))

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._check_single_objective(study)
        # Mix in the name so that parameters of one trial get independent draws.
        rng = self._rng(trial.number, zlib.crc32(param_name.encode()))
        if isinstance(param_distribution, CategoricalDistribution):
            return param_distribution.choices[int(rng.integers(len(param_distribution.choices)))]
        fallback = RandomSampler(seed=int(rng.integers(2**32)))
        return fallback.sample_independent(study, trial, param_name, param_distribution)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, *keys])

    def _check_single_objective(self, study: Study) -> None:
        if len(study.directions) > 1:
            raise ValueError(
                f"{type(self).__name__} supports single-objective studies; use controller "
                "'nsga2' for multi-objective"
            )

    @staticmethod
    def _completed(study: Study) -> list[FrozenTrial]:
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(trials, key=lambda t: t.number)

    @staticmethod
    def _search_space(completed: list[FrozenTrial]) -> dict[str, CategoricalDistribution]:
        space = intersection_search_space(completed)
        return {n: d for n, d in space.items() if isinstance(d, CategoricalDistribution)}

    @staticmethod
    def _members(
        completed: list[FrozenTrial], space: Mapping[str, CategoricalDistribution]
    ) -> list[FrozenTrial]:
        """Completed trials that hold every decision of ``space`` with the same choices."""
        return [
            t for t in completed if all(t.distributions.get(n) == d for n, d in space.items())
        ]

    @staticmethod
    def _sign(study: Study) -> float:
        return 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0


class EvolutionSampler(_TrialSeededSampler):
    """Regularized evolution: tournament selection, one-decision mutation, aging.

    Until ``population_size`` trials have completed, decisions are drawn uniformly at
    random. After that each trial draws ``sample_size`` members of the population (the
    last ``population_size`` completed trials, so the oldest dies first), copies the
    best and mutates exactly one decision.

    Args:
        seed: Seed of every random draw; None draws one at construction.
        population_size: Number of most recent completed trials that form the population.
        sample_size: Tournament size.

    Raises:
        ValueError: A size is below 1 or ``sample_size`` exceeds ``population_size``.
    """

    def __init__(
        self, *, seed: int | None = None, population_size: int = 20, sample_size: int = 5
    ) -> None:
        super().__init__(seed)
        if population_size < 1 or sample_size < 1:
            raise ValueError(
                f"population_size={population_size} and sample_size={sample_size} must both "
                "be >= 1"
            )
        if sample_size > population_size:
            raise ValueError(
                f"sample_size={sample_size} must be <= population_size={population_size}; "
                "lower sample_size or raise population_size"
            )
        self._population_size = population_size
        self._sample_size = sample_size

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        members = self._members(self._completed(study), search_space)
        rng = self._rng(trial.number)
        if len(members) < self._population_size:
            return {
                n: d.choices[int(rng.integers(len(d.choices)))] for n, d in search_space.items()
            }
        return self._offspring(study, members[-self._population_size :], search_space, rng)

    def _offspring(
        self,
        study: Study,
        population: list[FrozenTrial],
        search_space: Mapping[str, BaseDistribution],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        picked = rng.choice(len(population), size=self._sample_size, replace=False)
        sign = self._sign(study)
        # max() keeps the first of equal rewards, so ties resolve by the draw order.
        parent = max((population[int(i)] for i in picked), key=lambda t: sign * t.value)
        return mutate({n: parent.params[n] for n in search_space}, search_space, rng)
