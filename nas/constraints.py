"""Hard constraints: upper bounds on params, MACs and S, checked before any training.

``constraints: {params: 60000, macs: 4.0e8, step_time: 1.2x}`` in an experiment; ``1.2x``
is a multiple of the baseline's own figure (its params and MACs, its S measured on this
device). A candidate over a bound ends FAIL "infeasible: params 81,234 > 60,000" within
seconds, never trains and uses none of the budget; the space's baseline is trained
whatever the constraints say, since every search reports against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Bound", "Constraints", "CONSTRAINED", "Violation"]

CONSTRAINED = ("params", "macs", "step_time")


@dataclass(frozen=True)
class Bound:
    """An upper bound: ``value``, or ``value`` times the baseline's figure when ``relative``."""

    value: float
    relative: bool = False

    def limit(self, baseline: float | None) -> float | None:
        if not self.relative:
            return self.value
        return None if baseline is None else self.value * baseline

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class Violation:
    """A broken bound: the ledger's reason and how far over it is (relative, > 0)."""

    reason: str
    amount: float


@dataclass(frozen=True)
class Constraints:
    """Hard upper bounds (``constraints:`` in an experiment); None leaves a quantity free."""

    params: Bound | None = None
    macs: Bound | None = None
    step_time: Bound | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in CONSTRAINED)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in CONSTRAINED:
            bound = getattr(self, name)
            if bound is not None:
                out[name] = str(bound) if bound.relative else bound.value
        return out

    def check(self, values: Mapping[str, float | None], baseline: Mapping[str, float | None]) -> Violation | None:
        """The first bound ``values`` break (quantities not known yet are skipped), else None.

        Args:
            values: the candidate's params, macs and step_time (seconds) known so far.
            baseline: the baseline's figures, for relative bounds.
        """
        for name in CONSTRAINED:
            bound, value = getattr(self, name), values.get(name)
            if bound is None or value is None:
                continue
            limit = bound.limit(baseline.get(name))
            if limit is not None and value > limit:
                relative = f" ({bound} the baseline's)" if bound.relative else ""
                return Violation(f"infeasible: {name} {_show(name, value)} > {_show(name, limit)}{relative}",
                                 value / limit - 1.0)
        return None


def _show(name: str, value: float) -> str:
    if name == "step_time":
        return f"{value * 1e3:.3g} ms"
    return f"{value:,.0f}"
