"""Optuna's generic sampler tests, run over our controllers and the distinct wrapper.

Optuna ships the tests its own samplers pass (``optuna.testing.pytest_samplers``): bounds
and native types of every distribution kind, NaN objectives, conditional and dynamic
search spaces, relative sampling of numerical parameters, threads (``n_jobs=2``), and the
refusal of a multi-objective study by a single-objective sampler. A sampler of ours that
users drop into plain Optuna code has to pass them too.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from nas.controllers import DistinctSampler, make_sampler


class TestEvolution(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: make_sampler("evolution", seed=0)


class TestReinforce(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture(params=["reinforce", "ppo"])
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        options = {"algorithm": request.param}
        return lambda: make_sampler("reinforce", seed=0, options=options)


class TestMOEvolution(
    BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: make_sampler("evolution", seed=0, objectives=2)


class TestDistinct(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture(params=["random", "tpe", "nsga2"])
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        # A decision the generic tests never suggest, so their own parameters (often "x",
        # as a float) do not clash with the wrapper's relative search space.
        decisions = {"arch.d0": CategoricalDistribution((0, 1, 2))}
        return lambda: DistinctSampler(make_sampler(request.param, seed=0), decisions)
