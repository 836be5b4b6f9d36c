"""Evaluators turn a proposal into the ledger attributes of its result.

:class:`TrainingEvaluator` trains for real (data loaded and S0 measured once per
process); the simulated backend's evaluators live in :mod:`nas.simulate`. Both take the
same two callbacks: ``report(epoch, accuracy)`` returns a reason when the pruner stops
the candidate, and ``measured(attrs)`` hears what is known before training (params,
MACs, S) so that it is visible at once and a multi-objective pruner can use it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from nas.experiment import Experiment
from nas.ledger import Proposal
from nas.runtime import RuntimeOptions

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.measure import StepTime

__all__ = ["Evaluator", "TrainingEvaluator", "Report", "Measured", "trial_seed", "RESULT_ATTRS"]

Report = Callable[[int, float], "str | None"]
Measured = Callable[[dict[str, Any]], None]
RESULT_ATTRS = ("accuracy", "epoch_accuracies", "step_time", "step_time_p10", "step_time_p90", "device",
                "exclusive", "params", "macs", "reward", "reason", "constraint_violation")


class Evaluator(Protocol):
    """What a backend needs to score a candidate."""

    def evaluate(self, proposal: Proposal, *, report: Report, measured: Measured) -> dict[str, Any]:
        """The ledger attributes of ``proposal``'s result, ``state`` (COMPLETE, PRUNED, FAIL) included."""


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s proxy training (weights, batch order, augmentation)."""
    return (seed * 1_000_003 + number) % 2**31


class _Stopped(Exception):
    """The pruner stopped the candidate after an epoch."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrainingEvaluator:
    """Real proxy training in this process: cost, measured S, training, reward.

    Args:
        experiment: The validated experiment.
        runtime: Where the step-time cache and the device locks are.
        weights_dir: Where trained weights go when the experiment keeps them.
        device: Overrides the experiment's device (a Ray worker's GPU, say).
        log: Where a line about long preparations goes (measuring the reference).

    Raises:
        nas.data.DataError: the data cannot be loaded.
    """

    def __init__(self, experiment: Experiment, runtime: RuntimeOptions, *, weights_dir: Path | None = None,
                 device: str | None = None, log: Callable[[str], None] | None = None) -> None:
        from nas.data import load_dataset
        from nas.evaluate import resolve_reward
        from nas.measure import CacheCheck

        exp = experiment
        self.experiment, self.space, self.proxy = exp, exp.space, exp.proxy
        self.device = device if device is not None else (None if exp.device == "auto" else exp.device)
        self.data = load_dataset(exp.data.dataset, data_dir=exp.data.data_dir, seed=exp.seed,
                                 val_fraction=exp.data.val_fraction,
                                 resolution=exp.proxy.resolution if exp.data.dataset in ("imagefolder", "synthetic") else None)
        self.cache, self.lock_dir, self.weights_dir = runtime.step_time_cache(), runtime.lock_dir, weights_dir
        self.log = log
        if log is not None:
            data, (_, height, width) = self.data, self.data.train.image_shape
            log(f"data: {exp.data.dataset}, {len(data.train):,} training and {len(data.val):,} minival images "
                f"({height}x{width}, {data.num_classes} classes{', memory-mapped' if data.train.mapped else ''})")
        self.reference = exp.reference_arch
        # S of the reference, measured once: the reward's S0, what `step_time: 1.2x` multiplies,
        # and the baseline trial's own S (measured again, a busy device would give another value).
        self.reference_step = None
        self.cache_check = CacheCheck(self.cache, log)
        needs_s0 = exp.reward.kind == "efficientnetv2" and exp.reward.step_time_ref is None
        if self.reference is not None and (needs_s0 or exp.constraints.step_time is not None):
            if log is not None:
                log(f"measuring S of the reference {self.reference} (the reward's S0)")
            self.reference_step = self._measure(self.reference)
        reward = exp.reward
        if needs_s0 and self.reference_step is not None:
            reward = dataclasses.replace(reward, step_time_ref=self.reference_step.step_time)
        self.reward = resolve_reward(reward, self.reference, num_classes=self.data.num_classes, proxy=self.proxy,
                                     device=self.device, cache=self.cache, lock_dir=self.lock_dir)
        self.baseline_figures = self._baseline_figures()

    def _measure(self, arch: Arch) -> StepTime:
        """S of ``arch`` through the cache, the first hit checked against the device now (:class:`CacheCheck`)."""
        from nas.evaluate import measure_arch

        def measure(cache) -> StepTime:
            return measure_arch(arch, num_classes=self.data.num_classes, proxy=self.proxy, device=self.device,
                                cache=cache, lock_dir=self.lock_dir)

        return self.cache_check(measure(self.cache), str(arch), lambda: measure(None),
                                num_classes=self.data.num_classes)

    def _known_step(self, arch: Arch) -> StepTime | None:
        """S measured here before training: the reference's; the first cache hit's, to check the cache."""
        if arch == self.reference and self.reference_step is not None:
            return self.reference_step
        if self.cache_check.checked:
            return None  # evaluate() measures it (after the params and MACs bounds)
        return self._measure(arch)

    def _baseline_figures(self) -> dict[str, float | None]:
        """The reference's params, MACs and S: what relative constraints (``1.2x``) multiply."""
        from nas.cost import model_cost

        if self.reference is None or not self.experiment.constraints:
            return {}
        cost = model_cost(self.reference, self.proxy.resolution, self.data.num_classes)
        step_time = self.reward.step_time_ref or (self.reference_step.step_time if self.reference_step else None)
        return {"params": cost.params, "macs": cost.macs, "step_time": step_time}

    def evaluate(self, proposal: Proposal, *, report: Report, measured: Measured) -> dict[str, Any]:
        from nas.arch import parse_arch
        from nas.cost import model_cost
        from nas.evaluate import evaluate

        exp = self.experiment
        arch = parse_arch(proposal.arch)
        proxy = dataclasses.replace(self.proxy, seed=trial_seed(exp.seed, proposal.number))
        weights = self.weights_dir / f"trial_{proposal.number}.pt" if exp.keep_weights and self.weights_dir else None
        constraints = exp.constraints
        check = None if proposal.baseline or not constraints else \
            (lambda values: constraints.check(values, self.baseline_figures))
        cost = model_cost(arch, proxy.resolution, self.data.num_classes)
        epochs: list[float] = []
        known: dict[str, Any] = {"params": cost.params, "macs": cost.macs}

        def on_measured(step) -> None:
            known.update(step_time=step.step_time, step_time_p10=step.step_time_p10, step_time_p90=step.step_time_p90,
                         device=step.device, exclusive=step.exclusive)
            measured(dict(known))

        def on_epoch(epoch: int, accuracy: float) -> None:
            epochs.append(accuracy)
            if self.log is not None:
                self.log(f"  trial {proposal.number}: epoch {epoch}/{proxy.epochs}, val accuracy {accuracy:.4f}")
            reason = report(epoch, accuracy)
            if reason is not None:
                raise _Stopped(reason)

        try:
            result = evaluate(arch, self.data, proxy, self.reward, reference=self.reference, device=self.device,
                              cache=self.cache, on_epoch=on_epoch, on_measured=on_measured, keep_weights=weights,
                              check=check, lock_dir=self.lock_dir,
                              step=self._known_step(arch))
        except _Stopped as stop:
            return {"state": "PRUNED", "reason": stop.reason, "epoch_accuracies": epochs, **known, "seed": proxy.seed}
        attrs = {k: getattr(result, k) for k in RESULT_ATTRS}
        return {**attrs, "state": result.state, "seconds": round(result.seconds, 3), "seed": proxy.seed}
