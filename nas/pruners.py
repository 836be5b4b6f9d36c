"""Early stopping on per-epoch accuracy: Optuna's pruners, and multi-objective ASHA.

``pruner: median | successive_halving | hyperband`` use Optuna's pruners on the accuracy
alone (single-objective studies). ``pruner: mo_asha`` is multi-objective asynchronous
successive halving (Schmucker et al. 2021, as in Syne Tune's MOASHA): S and P are known
before training and accuracy arrives per epoch, so at each rung (epochs 1, 3, 9, ... with
η = 3) a candidate is compared with the candidates that reached the same rung before it
on (accuracy so far ↑, S ↓, P ↓). It is stopped when at least ⌈n/η⌉ of those n
candidates dominate it: it cannot be among the best 1/η at that rung under any Pareto
ranking. With fewer than η candidates at a rung it goes on. It works the same for a
scalar reward (every reward of the project rises with accuracy and falls with S and P)
and for the multi-objective one.
"""
from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.study import Study
from optuna.trial import FrozenTrial

__all__ = ["make_pruner", "MOASHAPruner", "stop_reason"]


def make_pruner(name: str, *, epochs: int) -> BasePruner:
    """The pruner called ``name`` for a proxy of ``epochs`` epochs (``none``: never stops)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "mo_asha":
        return MOASHAPruner(max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")


def stop_reason(pruner: BasePruner, name: str, epoch: int, accuracy: float) -> str:
    """The ledger's reason for a trial ``pruner`` just stopped."""
    detail = getattr(pruner, "last_reason", None)
    if detail:
        return f"pruned: {detail} ({name})"
    return f"pruned: accuracy {accuracy:.4f} after epoch {epoch} ({name} pruner)"


class MOASHAPruner(BasePruner):
    """Multi-objective ASHA on (accuracy so far ↑, S ↓, P ↓); see the module docstring.

    S and P come from the trials' ``step_time`` and ``params`` attributes, accuracy from
    their intermediate values (one per epoch). Finished trials are folded into the rung
    tables once; running ones are read at each decision.

    Args:
        eta: Reduction factor: the best 1/eta go on at each rung.
        min_resource: The first rung (epochs).
        max_resource: The proxy's epochs; no rung at or past it (the trial is done).
    """

    def __init__(self, *, eta: int = 3, min_resource: int = 1, max_resource: int = 1) -> None:
        if eta < 2 or min_resource < 1:
            raise ValueError(f"mo_asha needs eta >= 2 and min_resource >= 1, got {eta} and {min_resource}")
        self.eta, self.min_resource, self.max_resource = eta, min_resource, max_resource
        self._rungs: dict[int, dict[int, tuple[float, float, float]]] = {}  # rung -> number -> point
        self._watermark = 0
        self._folded: set[int] = set()
        self.last_reason: str | None = None

    def rungs(self) -> list[int]:
        """The epochs at which candidates are compared."""
        out, rung = [], self.min_resource
        while rung < self.max_resource:
            out.append(rung)
            rung *= self.eta
        return out

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        self.last_reason = None
        epoch = trial.last_step
        if epoch is None or epoch not in self.rungs():
            return False
        point = _point(trial, epoch)
        if point is None:
            return False
        others = self._at_rung(study, epoch, exclude=trial.number)
        n = len(others) + 1
        if n < self.eta:
            return False
        dominating = sum(1 for other in others if _dominates(other, point))
        needed = math.ceil(n / self.eta)
        if dominating < needed:
            return False
        accuracy, step_time, params = point
        self.last_reason = (f"dominated at epoch {epoch} by {dominating} of {n - 1} earlier candidates on accuracy, S "
                            f"and params (accuracy {accuracy:.4f}, S {step_time * 1e3:.3g} ms, {params:,.0f} params; "
                            f"the best 1/{self.eta} go on)")
        return True

    def _at_rung(self, study: Study, rung: int, *, exclude: int) -> list[tuple[float, float, float]]:
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        live: dict[int, tuple[float, float, float]] = {}
        for trial in trials[self._watermark:]:
            if trial.state.is_finished():
                if trial.number not in self._folded:
                    self._fold(trial)
                    self._folded.add(trial.number)
            else:
                point = _point(trial, rung)
                if point is not None:
                    live[trial.number] = point
        while self._watermark in self._folded:
            self._folded.discard(self._watermark)
            self._watermark += 1
        table = {**self._rungs.get(rung, {}), **live}
        return [p for number, p in table.items() if number != exclude]

    def _fold(self, trial: FrozenTrial) -> None:
        if trial.user_attrs.get("duplicate_of") is not None:
            return  # a repeat reuses a result: it did not reach the rung by itself
        for rung in self.rungs():
            point = _point(trial, rung)
            if point is not None:
                self._rungs.setdefault(rung, {})[trial.number] = point


def _point(trial: FrozenTrial, epoch: int) -> tuple[float, float, float] | None:
    accuracy = trial.intermediate_values.get(epoch)
    step_time, params = trial.user_attrs.get("step_time"), trial.user_attrs.get("params")
    if accuracy is None or step_time is None or params is None:
        return None
    return float(accuracy), float(step_time), float(params)


def _dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (accuracy ↑, S ↓, P ↓)."""
    no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    better = a[0] > b[0] or a[1] < b[1] or a[2] < b[2]
    return no_worse and better
