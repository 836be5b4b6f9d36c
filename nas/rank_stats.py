"""Rank agreement between two scorings of the same candidates (proxy vs long training).

A search trusts its proxy (a few epochs at reduced resolution) only as far as the proxy
ranks candidates as longer training does. This module measures that: Kendall's tau-b and
Spearman's rho (both account for ties), each with a seeded bootstrap interval, and the
top-K overlap. Pure functions of two score lists; higher scores are better in both (negate
a step time or a loss before passing it).

Example:
    >>> proxy = [0.61, 0.64, 0.58, 0.70, 0.66, 0.52]
    >>> long = [0.71, 0.75, 0.70, 0.80, 0.74, 0.65]
    >>> round(kendall_tau(proxy, long), 4), round(spearman_rho(proxy, long), 4)
    (0.8667, 0.9429)
    >>> top_k_overlap(proxy, long, k=3)
    1.0
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Correlation", "RankAgreement", "bootstrap_interval", "kendall_tau", "rank_agreement",
           "spearman_rho", "top_k_overlap"]

Scores = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Correlation:
    """A rank correlation and its bootstrap percentile interval.

    Attributes:
        estimate: the statistic on all pairs; NaN when undefined (a constant list).
        low, high: the interval's bounds; NaN when no resample was usable.
        level: the interval's coverage, e.g. 0.9.
        resamples: bootstrap resamples the interval rests on (degenerate ones dropped).
    """

    estimate: float
    low: float
    high: float
    level: float
    resamples: int


@dataclass(frozen=True)
class RankAgreement:
    """How well a proxy ranks candidates as long training does (see :func:`rank_agreement`)."""

    n: int
    kendall: Correlation
    spearman: Correlation
    top_k: int
    top_k_overlap: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (NaN stays NaN; JSON writers show it as NaN or null)."""
        return asdict(self)


def kendall_tau(x: Scores, y: Scores) -> float:
    """Kendall's tau-b of two score lists (ties in either list accounted for); NaN if undefined."""
    from scipy import stats

    a, b = _pair(x, y)
    if _constant(a) or _constant(b):
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)  # scipy's default variant is tau-b


def spearman_rho(x: Scores, y: Scores) -> float:
    """Spearman's rho of two score lists (ties get average ranks); NaN if undefined."""
    from scipy import stats

    a, b = _pair(x, y)
    if _constant(a) or _constant(b):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def bootstrap_interval(x: Scores, y: Scores, statistic: Callable[[np.ndarray, np.ndarray], float], *,
                       level: float = 0.9, resamples: int = 1000, seed: int = 0) -> Correlation:
    """``statistic(x, y)`` with a percentile bootstrap interval over resampled pairs.

    Each resample draws n pairs ``(x[i], y[i])`` with replacement (pairs stay together,
    so the dependence being measured is kept). A resample in which every x, or every y,
    is equal has no ranking to correlate; it is dropped, not counted as 0, and
    ``resamples`` in the result says how many were used. The interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the rest (linear
    interpolation); NaN when none is left. The same ``seed`` gives the same interval.

    Args:
        x, y: paired scores (equal length >= 2, finite).
        statistic: e.g. :func:`kendall_tau` or :func:`spearman_rho`.
        level: coverage of the interval, in (0, 1).
        resamples: bootstrap resamples to draw (>= 1).
        seed: seeds NumPy's generator.

    Raises:
        ValueError: for lists of different lengths, fewer than 2 pairs, non-finite
            scores, or a bad level or resample count.
    """
    a, b = _pair(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a whole number >= 1, got {resamples!r}")
    rng = np.random.default_rng(seed)
    values = []
    for index in rng.integers(0, len(a), size=(resamples, len(a))):
        xs, ys = a[index], b[index]
        if not (_constant(xs) or _constant(ys)):
            values.append(statistic(xs, ys))
    estimate = statistic(a, b)
    if not values:
        return Correlation(float(estimate), float("nan"), float("nan"), level, 0)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return Correlation(float(estimate), float(low), float(high), level, len(values))


def top_k_overlap(proxy: Scores, long: Scores, k: int) -> float:
    """``|top-K by proxy ∩ top-K by long| / K``: 1 when the proxy finds the same best K.

    Equal scores at the K-th place are broken by position (the earlier candidate first),
    so the result is deterministic.

    Raises:
        ValueError: for a ``k`` outside ``[1, n]`` or the list errors of :func:`bootstrap_interval`.
    """
    a, b = _pair(proxy, long)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(a):
        raise ValueError(f"k must be a whole number in [1, {len(a)}] (the number of candidates), got {k!r}")
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def rank_agreement(proxy: Scores, long: Scores, *, k: int, level: float = 0.9, resamples: int = 1000,
                   seed: int = 0) -> RankAgreement:
    """Kendall's tau-b and Spearman's rho with bootstrap intervals, and the top-K overlap.

    Both intervals use the same resampled pairs (same ``seed``), so they are comparable.
    See :func:`bootstrap_interval` and :func:`top_k_overlap` for the details and errors.
    """
    return RankAgreement(
        n=len(_pair(proxy, long)[0]),
        kendall=bootstrap_interval(proxy, long, kendall_tau, level=level, resamples=resamples, seed=seed),
        spearman=bootstrap_interval(proxy, long, spearman_rho, level=level, resamples=resamples, seed=seed),
        top_k=k,
        top_k_overlap=top_k_overlap(proxy, long, k),
    )


def _pair(x: Scores, y: Scores) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"scores must be flat lists, got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"the two score lists differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"ranking needs at least 2 candidates, got {len(a)}")
    for name, values in (("first", a), ("second", b)):
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"the {name} score list holds {values[bad]} at position {bad}; scores must be finite")
    return a, b


def _constant(values: np.ndarray) -> bool:
    return bool(values.min() == values.max())
