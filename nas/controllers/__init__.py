"""Search controllers: every one is an ``optuna.samplers.BaseSampler``.

Optuna's own (random, TPE, NSGA-II) plus ours: a policy-gradient controller
(:class:`ReinforceSampler`) and regularized evolution (:class:`EvolutionSampler`, and
:class:`MOEvolutionSampler` for several objectives). Ours fold each finished trial of the
study once, in trial-number order, and propose architectures the study does not hold yet;
:func:`distinct` gives Optuna's samplers the same property.
"""
from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from nas.controllers._base import check_seed
from nas.controllers.distinct import DistinctSampler, distinct
from nas.controllers.evolution import EvolutionSampler, mutate
from nas.controllers.mo_evolution import MOEvolutionSampler
from nas.controllers.reinforce import ReinforceSampler

__all__ = [
    "CONTROLLERS",
    "EFFICIENTNETV2_WEIGHTS",
    "DistinctSampler",
    "EvolutionSampler",
    "MOEvolutionSampler",
    "ReinforceSampler",
    "distinct",
    "make_sampler",
    "mutate",
]

CONTROLLERS = ("random", "tpe", "nsga2", "reinforce", "evolution")

# The EfficientNetV2 reward A * S^-0.07 * P^-0.05 as weights of log(accuracy),
# log(step_time), log(params): how `reinforce` scalarises three objectives by default.
EFFICIENTNETV2_WEIGHTS = (1.0, -0.07, -0.05)

# Defaults we pick where Optuna's suit a handful of categorical NAS decisions poorly;
# options given by the user override them.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "tpe": {"multivariate": True, "group": True, "n_startup_trials": 10},
    "nsga2": {"population_size": 8},
}


def make_sampler(
    name: str,
    *,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    objectives: int = 1,
) -> optuna.samplers.BaseSampler:
    """Build the controller called ``name`` for a study with ``objectives`` objectives.

    Args:
        name: One of :data:`CONTROLLERS`.
        seed: Seed of the sampler (numpy integers accepted); the same seed gives the same
            proposals.
        options: Extra keyword arguments of the sampler's constructor, e.g.
            ``{"population_size": 30}`` for ``evolution``.
        objectives: Number of objectives of the study. With more than one, ``evolution``
            is :class:`MOEvolutionSampler` and ``reinforce`` scalarises the objectives
            with ``options["weights"]``, by default :data:`EFFICIENTNETV2_WEIGHTS` for
            three objectives (accuracy, step time, params).

    Returns:
        The sampler, ready to pass to ``optuna.create_study``.

    Raises:
        ValueError: ``name`` is unknown, an option is unknown or rejected, ``seed`` or
            ``objectives`` is out of range, or ``reinforce`` lacks weights for its
            objectives.
    """
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r} (choose from {', '.join(CONTROLLERS)})")
    if isinstance(objectives, bool) or not isinstance(objectives, numbers.Integral) or objectives < 1:
        raise ValueError(f"objectives={objectives!r} must be an int >= 1")
    seed = check_seed(seed)
    cls = _sampler_class(name, int(objectives))
    options = dict(options or {})
    _check_options(name, cls, options)
    kwargs = {**_DEFAULTS.get(name, {}), **options}
    if name == "reinforce" and objectives > 1:
        kwargs["weights"] = _weights(kwargs.get("weights"), int(objectives))
    # multivariate/group TPE is marked experimental; we choose it deliberately.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(seed=seed, **kwargs)
        except TypeError as err:
            raise ValueError(f"controller {name!r} rejected options {options}: {err}") from None


def _sampler_class(name: str, objectives: int) -> type[optuna.samplers.BaseSampler]:
    if name == "evolution":
        return MOEvolutionSampler if objectives > 1 else EvolutionSampler
    return {
        "random": optuna.samplers.RandomSampler,
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "reinforce": ReinforceSampler,
    }[name]


def _weights(weights: Any, objectives: int) -> tuple[float, ...]:
    if weights is None:
        if objectives != len(EFFICIENTNETV2_WEIGHTS):
            raise ValueError(
                f"controller 'reinforce' with {objectives} objectives needs "
                "options={'weights': [...]}, one weight per objective (the default "
                f"{list(EFFICIENTNETV2_WEIGHTS)} is for accuracy, step_time, params)"
            )
        return EFFICIENTNETV2_WEIGHTS
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"option 'weights' of controller 'reinforce' must be numbers, got {weights!r}") from None
    if len(weights) != objectives:
        raise ValueError(
            f"option 'weights' of controller 'reinforce' has {len(weights)} values for "
            f"{objectives} objectives; give one weight per objective"
        )
    return weights


def _check_options(name: str, cls: type, options: Mapping[str, Any]) -> None:
    accepted = sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")
    for key in options:
        if key == "seed":
            raise ValueError(f"option 'seed' for controller {name!r}: pass seed=... instead")
        if key not in accepted:
            valid = ", ".join(p for p in accepted if p != "seed")
            raise ValueError(
                f"unknown option {key!r} for controller {name!r} (valid: {valid})"
            )
