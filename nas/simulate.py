"""Instant evaluations for ``backend: simulated``: a synthetic landscape or a table of results.

Benchmarks and tests of the machinery (ledger, dedup, budget, pruners, controllers,
analysis) need thousands of candidates in seconds; these evaluators give each candidate
its accuracy per epoch, S, P and its training seconds without training anything. The
simulated backend (:mod:`nas.backends.simulated`) runs them on a virtual clock.

**Synthetic** (``simulated.evaluator: synthetic``, the default) is a documented,
deterministic function of the architecture and the experiment's seed:

- P and MACs are exact (:func:`nas.cost.model_cost` at the proxy resolution);
- S = S0 · (MACs/MACs0)^0.6 · (depth/depth0)^0.4, S0 = 10 ms: compute and per-layer
  overhead, relative to the reference (the space's baseline);
- final accuracy = 0.9 + 0.03 · tanh(0.6·log(MACs/MACs0) + 0.4·log(P/P0)) + Σ effect(decision,
  choice) + ε, clipped to [0.05, 0.995], where each (decision, choice) has a fixed effect
  drawn from N(0, 0.01) by the seed (a landscape with structure a controller can learn)
  and ε ~ N(0, ``simulated.noise``) is drawn from (seed, architecture);
- the accuracy after epoch e of E follows acc·(1 − exp(−3e/E))/(1 − exp(−3)), so it
  rises and ends at the final accuracy;
- training seconds = S · ``simulated.steps_per_epoch`` · E;
- P is counted with 10 classes.

Hard constraints (``constraints:``) apply as in a real search: a candidate over a bound
ends FAIL "infeasible: ..." at once.

**Table** (``simulated.evaluator: table``, ``simulated.table: PATH``) reads a CSV with
columns ``arch``, ``accuracy``, ``step_time`` (seconds), ``params`` and optionally
``seconds`` and ``epoch_accuracies`` (a JSON list); an architecture that is not in the
table ends FAIL "invalid: not in the table".
"""
from __future__ import annotations

import csv
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, parse_arch
from nas.experiment import Experiment
from nas.ledger import Proposal

__all__ = ["SimulatedResult", "SyntheticEvaluator", "TableEvaluator", "simulated_evaluator"]

_S0 = 0.010
_CURVE = 3.0


@dataclass(frozen=True)
class SimulatedResult:
    """What a simulated candidate scores, before the pruner has a say."""

    attrs: dict[str, Any]              # the ledger attributes of the finished candidate
    epoch_accuracies: tuple[float, ...]
    seconds: float                     # virtual training time


def simulated_evaluator(experiment: Experiment):
    """The evaluator ``simulated.evaluator`` names."""
    if experiment.simulated.evaluator == "table":
        return TableEvaluator(experiment)
    return SyntheticEvaluator(experiment)


class _Simulated:
    """Shared: the reward's reference figures and the ledger attributes of a result."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.epochs = experiment.proxy.epochs
        self.num_classes = 10
        self.baseline: dict[str, float | None] = {}  # the reference's figures, for relative constraints

    def _reward(self, reference: tuple[float, float] | None):
        spec = self.experiment.reward
        if spec.kind == "efficientnetv2" and spec.step_time_ref is None:
            if reference is None:
                raise ValueError("simulated: the efficientnetv2 reward needs the reference in the table, or reward "
                                 "step_time_ref and params_ref")
            return spec.with_reference(step_time=reference[0], params=int(reference[1]))
        return spec

    def _result(self, proposal: Proposal, accuracy: float, step_time: float, params: int, macs: int | None,
                curve: tuple[float, ...], seconds: float) -> SimulatedResult:
        violation = None if proposal.baseline else self.experiment.constraints.check(
            {"params": params, "macs": macs, "step_time": step_time}, self.baseline)
        if violation is not None:  # known before training: no virtual time spent
            attrs = {"state": "FAIL", "reason": violation.reason, "constraint_violation": violation.amount,
                     "step_time": step_time, "params": params, "macs": macs, "seconds": 0.0}
            return SimulatedResult(attrs, (), 0.0)
        reward = self.reward(accuracy=accuracy, step_time=step_time, params=params, macs=macs or 1)
        attrs = {"state": "COMPLETE", "accuracy": accuracy, "epoch_accuracies": list(curve), "step_time": step_time,
                 "step_time_p10": step_time, "step_time_p90": step_time, "device": "simulated", "exclusive": True,
                 "params": params, "macs": macs, "reward": reward, "seconds": round(seconds, 3)}
        return SimulatedResult(attrs, curve, seconds)


def _curve(accuracy: float, epochs: int) -> tuple[float, ...]:
    norm = 1.0 - math.exp(-_CURVE)
    return tuple(round(accuracy * (1.0 - math.exp(-_CURVE * e / epochs)) / norm, 6) for e in range(1, epochs + 1))


class SyntheticEvaluator(_Simulated):
    """The synthetic landscape of the module docstring."""

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        reference = experiment.reference_arch or experiment.space.sample(experiment.seed)
        self.resolution = experiment.proxy.resolution
        self.ref = self._figures(reference)
        rng = np.random.default_rng([experiment.seed, 0x5EED])
        self.effects = {d.name: {c: float(rng.normal(0.0, 0.01)) for c in d.choices}
                        for d in experiment.space.decisions}
        self.reward = self._reward((self._step_time(*self.ref), self.ref[0]))
        self.baseline = {"params": self.ref[0], "macs": self.ref[1], "step_time": self._step_time(*self.ref)}

    def _figures(self, arch: Arch) -> tuple[int, int, int]:
        from nas.cost import model_cost

        cost = model_cost(arch, self.resolution, self.num_classes)
        return cost.params, cost.macs, arch.depth

    def _step_time(self, params: int, macs: int, depth: int) -> float:
        _, macs0, depth0 = self.ref
        return _S0 * (macs / macs0) ** 0.6 * (depth / depth0) ** 0.4

    def evaluate(self, proposal: Proposal) -> SimulatedResult:
        exp, arch = self.experiment, proposal.arch
        parsed = parse_arch(arch)
        params, macs, depth = self._figures(parsed)
        params0, macs0, _ = self.ref
        capacity = 0.6 * math.log(macs / macs0) + 0.4 * math.log(params / params0)
        values = exp.space.to_decisions(parsed)
        quality = sum(self.effects[name][value] for name, value in values.items())
        noise = np.random.default_rng([exp.seed, zlib.crc32(arch.encode())]).normal(0.0, exp.simulated.noise)
        accuracy = round(float(np.clip(0.9 + 0.03 * math.tanh(capacity) + quality + noise, 0.05, 0.995)), 6)
        step_time = self._step_time(params, macs, depth)
        seconds = step_time * exp.simulated.steps_per_epoch * self.epochs
        return self._result(proposal, accuracy, step_time, params, macs, _curve(accuracy, self.epochs), seconds)


class TableEvaluator(_Simulated):
    """Results looked up in a CSV (``simulated.table``)."""

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        self.path = Path(experiment.simulated.table)
        self.rows = _read_table(self.path)
        reference = experiment.reference_arch
        row = self.rows.get(str(reference)) if reference is not None else None
        self.reward = self._reward((row["step_time"], row["params"]) if row else None)
        if row is not None:
            self.baseline = {"params": row["params"], "step_time": row["step_time"]}

    def evaluate(self, proposal: Proposal) -> SimulatedResult:
        from nas.cost import model_cost

        row = self.rows.get(proposal.arch)
        if row is None:
            attrs = {"state": "FAIL", "reason": "invalid: not in the table", "seconds": 0.0}
            return SimulatedResult(attrs, (), 0.0)
        curve = row["epoch_accuracies"] or _curve(row["accuracy"], self.epochs)
        seconds = row["seconds"] if row["seconds"] is not None else row["step_time"] * 100 * self.epochs
        macs = model_cost(parse_arch(proposal.arch), self.experiment.proxy.resolution, self.num_classes).macs
        return self._result(proposal, row["accuracy"], row["step_time"], row["params"], macs, curve, seconds)


def _read_table(path: Path) -> dict[str, dict[str, Any]]:
    """CSV rows by canonical arch string; one-line errors name the file, row and column."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise ValueError(f"simulated.table: cannot read {path}: {err.strerror or err}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("arch", "accuracy", "step_time", "params") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"simulated.table: {path} has no column {missing[0]!r}")
        for line, raw in enumerate(reader, start=2):
            try:
                arch = str(parse_arch(raw["arch"]))
                row = {"accuracy": float(raw["accuracy"]), "step_time": float(raw["step_time"]),
                       "params": int(float(raw["params"])),
                       "seconds": float(raw["seconds"]) if raw.get("seconds") else None,
                       "epoch_accuracies": tuple(json.loads(raw["epoch_accuracies"]))
                       if raw.get("epoch_accuracies") else None}
            except (ValueError, TypeError) as err:
                raise ValueError(f"simulated.table: {path} line {line}: {str(err)[:120]}") from None
            if not (0 <= row["accuracy"] <= 1 and row["step_time"] > 0 and row["params"] > 0):
                raise ValueError(f"simulated.table: {path} line {line}: accuracy must be in [0, 1], step_time "
                                 "and params > 0")
            rows[arch] = row
    return rows
