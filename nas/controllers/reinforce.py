"""Policy-gradient controller as an Optuna sampler (MnasNet / TuNAS style).

The policy is one independent softmax per decision. It is never saved: every call
replays the study's completed trials in trial-number order through the same updates,
so a resumed study or a second worker arrives at exactly the same policy.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial

from nas.controllers.evolution import _TrialSeededSampler

__all__ = ["ReinforceSampler"]

_ALGORITHMS = ("reinforce", "ppo")
_OPTIMIZERS = ("adam", "sgd")
_BETAS, _EPS = (0.9, 0.999), 1e-8

# What one completed trial contributes to the policy: (reward, chosen index per decision).
_Step = tuple[float, tuple[int, ...]]


@dataclass
class _Policy:
    """Logits per decision (in search-space order) plus optimizer and baseline state."""

    logits: list[torch.Tensor]
    moments: list[tuple[torch.Tensor, torch.Tensor]]
    steps: int = 0
    baseline: float | None = None

    @classmethod
    def uniform(cls, sizes: list[int]) -> _Policy:
        zeros = [torch.zeros(n, dtype=torch.float64) for n in sizes]
        return cls(zeros, [(torch.zeros_like(z), torch.zeros_like(z)) for z in zeros])

    def clone(self) -> _Policy:
        moments = [(m.clone(), v.clone()) for m, v in self.moments]
        return _Policy([z.clone() for z in self.logits], moments, self.steps, self.baseline)


class ReinforceSampler(_TrialSeededSampler):
    """Learn a categorical policy over the decisions from the rewards of finished trials.

    For each completed trial (in number order) the reward ``r`` (negated when minimizing)
    is compared with a moving-average baseline, and the logits take one optimizer step on
    ``-(r - b) * log pi(a) - entropy_weight * H(pi)`` -- or, with ``algorithm="ppo"``,
    ``ppo_epochs`` steps on the clipped surrogate against the policy before the update.

    Args:
        seed: Seed of every random draw; None draws one at construction.
        learning_rate: Step size of the optimizer on the logits.
        entropy_weight: Weight of the entropy bonus that keeps exploration alive.
        optimizer: ``"adam"`` or ``"sgd"``.
        baseline_decay: Decay of the reward moving average (0 keeps only the last reward).
        algorithm: ``"reinforce"`` or ``"ppo"``.
        ppo_clip: Clip range of the PPO probability ratio.
        ppo_epochs: Optimizer steps per trial with PPO.

    Raises:
        ValueError: An argument is out of range or not one of the listed names.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        learning_rate: float = 0.05,
        entropy_weight: float = 1e-3,
        optimizer: str = "adam",
        baseline_decay: float = 0.9,
        algorithm: str = "reinforce",
        ppo_clip: float = 0.2,
        ppo_epochs: int = 4,
    ) -> None:
        super().__init__(seed)
        _check_choice("algorithm", algorithm, _ALGORITHMS)
        _check_choice("optimizer", optimizer, _OPTIMIZERS)
        for name, value, ok, rule in (
            ("learning_rate", learning_rate, learning_rate > 0, "> 0"),
            ("entropy_weight", entropy_weight, entropy_weight >= 0, ">= 0"),
            ("baseline_decay", baseline_decay, 0 <= baseline_decay < 1, "in [0, 1)"),
            ("ppo_clip", ppo_clip, ppo_clip > 0, "> 0"),
            ("ppo_epochs", ppo_epochs, ppo_epochs >= 1, ">= 1"),
        ):
            if not ok:
                raise ValueError(f"{name}={value!r} must be {rule}")
        self._lr, self._entropy_weight, self._optimizer = learning_rate, entropy_weight, optimizer
        self._decay, self._algorithm = baseline_decay, algorithm
        self._clip, self._epochs = ppo_clip, ppo_epochs
        # (space key, replayed steps, policy): lets the next call replay only new trials.
        self._cache: tuple[Any, tuple[_Step, ...], _Policy] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The cache is derived data; leave it out so pickles stay small.
        return {**self.__dict__, "_cache": None}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        rng = self._rng(trial.number)
        probabilities = self._probabilities(study, search_space)
        return {
            name: dist.choices[int(rng.choice(len(probs), p=probs))]
            for (name, dist), probs in zip(search_space.items(), probabilities)
        }

    def policy(self, study: Study) -> dict[str, dict[Any, float]]:
        """Return the current probability of every choice of every decision.

        Args:
            study: The study whose completed trials define the policy.

        Returns:
            ``{decision: {choice: probability}}``; empty before the first completed trial.
        """
        self._check_single_objective(study)
        space = self._search_space(self._completed(study))
        return {
            name: dict(zip(dist.choices, map(float, probs)))
            for (name, dist), probs in zip(space.items(), self._probabilities(study, space))
        }

    def _probabilities(
        self, study: Study, space: Mapping[str, BaseDistribution]
    ) -> list[np.ndarray]:
        if not space:
            return []
        policy = self._replay(study, space)
        probs = [torch.softmax(z, 0).numpy() for z in policy.logits]
        return [p / p.sum() for p in probs]  # exact normalisation for Generator.choice

    def _replay(self, study: Study, space: Mapping[str, BaseDistribution]) -> _Policy:
        sign = self._sign(study)
        steps = tuple(
            (sign * t.value, tuple(int(d.to_internal_repr(t.params[n])) for n, d in space.items()))
            for t in self._members(self._completed(study), space)
        )
        key = (sign, tuple((n, d.choices) for n, d in space.items()))
        # Continue from the cached policy only if it replayed a prefix of the same steps;
        # a late-finishing lower-numbered trial (several workers) forces a full replay.
        cache = self._cache  # read once: another thread may replace it meanwhile
        if cache and cache[0] == key and steps[: len(cache[1])] == cache[1]:
            policy, done = cache[2].clone(), len(cache[1])
        else:
            policy, done = _Policy.uniform([len(d.choices) for d in space.values()]), 0
        for reward, actions in steps[done:]:
            self._update(policy, reward, actions)
        self._cache = (key, steps, policy)
        return policy

    def _update(self, policy: _Policy, reward: float, actions: tuple[int, ...]) -> None:
        if policy.baseline is None:
            policy.baseline = reward
        advantage = reward - policy.baseline
        policy.baseline = self._decay * policy.baseline + (1 - self._decay) * reward
        old_log_prob = _log_prob(policy.logits, actions).item()
        for _ in range(self._epochs if self._algorithm == "ppo" else 1):
            logits = [z.detach().requires_grad_() for z in policy.logits]
            log_prob = _log_prob(logits, actions)
            if self._algorithm == "ppo":
                ratio = torch.exp(log_prob - old_log_prob)
                clipped = torch.clamp(ratio, 1 - self._clip, 1 + self._clip)
                objective = torch.minimum(ratio * advantage, clipped * advantage)
            else:
                objective = advantage * log_prob
            entropy = sum(-(torch.softmax(z, 0) * torch.log_softmax(z, 0)).sum() for z in logits)
            loss = -objective - self._entropy_weight * entropy
            grads = torch.autograd.grad(loss, logits)
            self._step(policy, list(grads))

    def _step(self, policy: _Policy, grads: list[torch.Tensor]) -> None:
        policy.steps += 1
        if self._optimizer == "sgd":
            policy.logits = [z - self._lr * g for z, g in zip(policy.logits, grads)]
            return
        (b1, b2), t = _BETAS, policy.steps
        new_logits, new_moments = [], []
        for z, (m, v), g in zip(policy.logits, policy.moments, grads):
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            new_logits.append(z - self._lr * m_hat / (v_hat.sqrt() + _EPS))
            new_moments.append((m, v))
        policy.logits, policy.moments = new_logits, new_moments


def _log_prob(logits: list[torch.Tensor], actions: tuple[int, ...]) -> torch.Tensor:
    return sum(torch.log_softmax(z, 0)[a] for z, a in zip(logits, actions))


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported (choose from {', '.join(allowed)})")
