"""Search controllers: every one is an ``optuna.samplers.BaseSampler``.

Optuna's own (random, TPE, NSGA-II) plus ours: a policy-gradient controller
(:class:`ReinforceSampler`) and regularized evolution (:class:`EvolutionSampler`).
``ReinforceSampler`` is imported on first use because it needs torch.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from nas.controllers.evolution import EvolutionSampler, mutate

__all__ = ["CONTROLLERS", "EvolutionSampler", "ReinforceSampler", "make_sampler", "mutate"]

CONTROLLERS = ("random", "tpe", "nsga2", "reinforce", "evolution")

# Defaults we pick where Optuna's suit a handful of categorical NAS decisions poorly;
# options given by the user override them.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "tpe": {"multivariate": True, "group": True, "n_startup_trials": 10},
    "nsga2": {"population_size": 8},
}


def __getattr__(name: str) -> Any:
    if name == "ReinforceSampler":
        value = importlib.import_module("nas.controllers.reinforce").ReinforceSampler
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas.controllers' has no attribute {name!r}")


def make_sampler(
    name: str, *, seed: int | None = None, options: Mapping[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    """Build the controller called ``name``.

    Args:
        name: One of :data:`CONTROLLERS`.
        seed: Seed of the sampler; the same seed gives the same proposals.
        options: Extra keyword arguments of the sampler's constructor, e.g.
            ``{"population_size": 30}`` for ``evolution``.

    Returns:
        The sampler, ready to pass to ``optuna.create_study``.

    Raises:
        ValueError: ``name`` is unknown, or an option is unknown or rejected.
    """
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r} (choose from {', '.join(CONTROLLERS)})")
    cls = _sampler_class(name)
    options = dict(options or {})
    _check_options(name, cls, options)
    kwargs = {**_DEFAULTS.get(name, {}), **options}
    # multivariate/group TPE is marked experimental; we choose it deliberately.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(seed=seed, **kwargs)
        except TypeError as err:
            raise ValueError(f"controller {name!r} rejected options {options}: {err}") from None


def _sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    if name == "reinforce":
        return __getattr__("ReinforceSampler")
    return {
        "random": optuna.samplers.RandomSampler,
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "evolution": EvolutionSampler,
    }[name]


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
