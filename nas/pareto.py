"""Pareto fronts, hypervolume and empirical distribution functions.

The pure math behind result analysis: numpy and pandas only, no torch or optuna, so
analysis of a finished search runs anywhere.

Every objective has a direction. Internally all objectives are turned into
minimisation by negating the maximised ones, so a single dominance test serves every
mix of directions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_OBJECTIVES",
    "Direction",
    "OBJECTIVE_DIRECTIONS",
    "dominates",
    "edf",
    "edf_by",
    "hypervolume",
    "non_dominated_ranks",
    "pareto_front",
    "pareto_mask",
    "pareto_ranks",
]

Direction = Literal["maximize", "minimize"]

DEFAULT_OBJECTIVES: dict[str, Direction] = {
    "accuracy": "maximize",
    "step_time": "minimize",
    "params": "minimize",
}

OBJECTIVE_DIRECTIONS: dict[str, Direction] = {
    "accuracy": "maximize",
    "reward": "maximize",
    "step_time": "minimize",
    "params": "minimize",
    "macs": "minimize",
}

_DIRECTIONS = ("maximize", "minimize")

# Upper bound on the number of booleans in one (rows, cols) comparison block: keeps
# the pairwise dominance test vectorised without an n x n matrix in memory (n = 10^4
# would need 100 MB per boolean matrix).
_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- helpers


def _as_maximize(maximize: Sequence[bool], k: int) -> np.ndarray:
    flags = np.asarray(maximize, dtype=bool).reshape(-1)
    if flags.shape[0] != k:
        raise ValueError(
            f"maximize has {flags.shape[0]} entries but the points have {k} objectives; "
            "pass one flag per objective"
        )
    return flags


def _as_points(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n, k), got shape {arr.shape}; "
            "for a single point use [point]"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no objectives (shape {arr.shape})")
    return arr


def _check_no_nan_rows(arr: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(np.isnan(arr).any(axis=1))
    if bad.size:
        raise ValueError(
            f"{name} row {int(bad[0])} contains NaN ({bad.size} such rows); "
            "filter out incomplete rows first"
        )


def _plain(label: Any) -> Any:
    # numpy scalars repr as "np.int64(13)"; messages and dict keys read better plain.
    return label.item() if isinstance(label, np.generic) else label


def _to_minimization(arr: np.ndarray, flags: np.ndarray) -> np.ndarray:
    return np.where(flags, -arr, arr)


def _unique_rows(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``v`` and, per original row, the index of its distinct row."""
    # Adding 0.0 turns -0.0 into 0.0, so rows that compare equal are also merged.
    uniq, inverse = np.unique(v + 0.0, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _dominance_counts(u: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each point in ``cols``, count the points in ``rows`` that dominate it.

    ``u`` must hold distinct rows in minimisation form. Between distinct rows, "no
    worse in every objective" already implies "strictly better in one", so one
    ``<=`` test per axis suffices; a row never dominates itself, so self-pairs are
    subtracted. Rows are processed in blocks of 2-D boolean matrices, one axis at a
    time, which keeps memory bounded and avoids slow reductions over a short last axis.
    """
    counts = np.zeros(cols.shape[0], dtype=np.int64)
    if rows.size == 0 or cols.size == 0:
        return counts
    uc = np.ascontiguousarray(u[cols].T)  # (k, n_cols): each axis a contiguous row
    ur = u[rows]
    block = max(1, _BLOCK_ELEMENTS // cols.shape[0])
    for start in range(0, rows.shape[0], block):
        chunk = ur[start : start + block]
        no_worse = chunk[:, 0, None] <= uc[0][None, :]
        for axis in range(1, u.shape[1]):
            no_worse &= chunk[:, axis, None] <= uc[axis][None, :]
        counts += np.count_nonzero(no_worse, axis=0)
    # Self-pairs: every column when comparing all against all (the common case, kept
    # O(n)), otherwise only the columns that also appear among the rows.
    counts -= 1 if rows is cols else np.isin(cols, rows)
    return counts


# ------------------------------------------------------------------------- dominance


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b``.

    ``a`` dominates ``b`` when it is at least as good in every objective and strictly
    better in at least one; identical points do not dominate each other.

    Args:
        a: Objective values of the first point.
        b: Objective values of the second point.
        maximize: One flag per objective, True where larger is better.

    Returns:
        True if ``a`` dominates ``b``.

    Raises:
        ValueError: If the lengths differ or a value is NaN.
    """
    av = np.asarray(a, dtype=float).reshape(-1)
    bv = np.asarray(b, dtype=float).reshape(-1)
    if av.shape != bv.shape:
        raise ValueError(f"a has {av.size} objectives but b has {bv.size}")
    flags = _as_maximize(maximize, av.size)
    if np.isnan(av).any() or np.isnan(bv).any():
        raise ValueError(f"cannot compare points containing NaN: a={av.tolist()}, b={bv.tolist()}")
    am, bm = _to_minimization(av, flags), _to_minimization(bv, flags)
    return bool((am <= bm).all() and (am < bm).any())


def non_dominated_ranks(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Non-dominated sorting: the Pareto front index of every point.

    Rank 0 is the Pareto front, rank 1 the front of what remains after removing rank 0,
    and so on. Identical points do not dominate each other, so duplicates share a rank.
    The sort is exact; it costs O(n^2 k) comparisons, vectorised in blocks, which
    handles n around 10^4 in a fraction of a second.

    Args:
        values: Array of shape (n, k), one row per point.
        maximize: One flag per objective, True where larger is better.

    Returns:
        Integer array of shape (n,) with the rank of each row.

    Raises:
        ValueError: If ``values`` is not 2-D, ``maximize`` has the wrong length, or a
            row contains NaN (the message names the first such row).
    """
    arr = _as_points(values, "values")
    flags = _as_maximize(maximize, arr.shape[1])
    _check_no_nan_rows(arr, "values")
    n = arr.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    # Duplicates always share a rank, so sorting unique rows is exact and saves work
    # on the small integer grids (param counts, rounded times) that searches produce.
    uniq, inverse = _unique_rows(_to_minimization(arr, flags))
    m = uniq.shape[0]
    everyone = np.arange(m)
    counts = _dominance_counts(uniq, everyone, everyone)
    ranks = np.full(m, -1, dtype=np.int64)
    front = np.flatnonzero(counts == 0)
    rank = 0
    # Peel fronts Deb-style: once a front is ranked its points stop counting as
    # dominators, so each point is used as a dominator exactly once overall.
    while front.size:
        ranks[front] = rank
        remaining = np.flatnonzero(ranks < 0)
        if remaining.size == 0:
            break
        counts[remaining] -= _dominance_counts(uniq, front, remaining)
        front = remaining[counts[remaining] == 0]
        rank += 1
    assert (ranks >= 0).all(), "every point must end on some front"
    return ranks[inverse]


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the points on the Pareto front (rank 0).

    Args:
        values: Array of shape (n, k), one row per point.
        maximize: One flag per objective, True where larger is better.

    Returns:
        Boolean array of shape (n,), True for non-dominated rows.

    Raises:
        ValueError: As for :func:`non_dominated_ranks`.
    """
    arr = _as_points(values, "values")
    flags = _as_maximize(maximize, arr.shape[1])
    _check_no_nan_rows(arr, "values")
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    # Only the front is needed, so one counting pass replaces the full sort.
    uniq, inverse = _unique_rows(_to_minimization(arr, flags))
    everyone = np.arange(uniq.shape[0])
    return (_dominance_counts(uniq, everyone, everyone) == 0)[inverse]


# ------------------------------------------------------------------------ DataFrames


def _resolve_objectives(
    df: pd.DataFrame, objectives: Mapping[str, Direction] | Sequence[str] | None
) -> tuple[list[str], list[bool]]:
    if objectives is None:
        objectives = DEFAULT_OBJECTIVES
    if isinstance(objectives, str):
        raise TypeError(
            f"objectives must be a list of names or a name -> direction mapping, "
            f"not the string {objectives!r}; did you mean [{objectives!r}]?"
        )
    if isinstance(objectives, Mapping):
        pairs = list(objectives.items())
    else:
        pairs = []
        for name in objectives:
            if name not in OBJECTIVE_DIRECTIONS:
                raise ValueError(
                    f"unknown objective {name!r}: its direction is not known; use one of "
                    f"{sorted(OBJECTIVE_DIRECTIONS)} or pass a mapping such as "
                    f"{{{name!r}: 'minimize'}}"
                )
            pairs.append((name, OBJECTIVE_DIRECTIONS[name]))
    if not pairs:
        raise ValueError("objectives is empty; give at least one objective")
    names: list[str] = []
    flags: list[bool] = []
    for name, direction in pairs:
        if direction not in _DIRECTIONS:
            raise ValueError(
                f"objective {name!r} has direction {direction!r}; use 'maximize' or 'minimize'"
            )
        if name in names:
            raise ValueError(f"objective {name!r} is listed twice")
        if name not in df.columns:
            raise ValueError(
                f"objective column {name!r} is missing from the DataFrame; "
                f"columns are {list(df.columns)}"
            )
        names.append(name)
        flags.append(direction == "maximize")
    return names, flags


def _objective_values(df: pd.DataFrame, names: list[str]) -> np.ndarray:
    columns = []
    for name in names:
        try:
            columns.append(df[name].to_numpy(dtype=float, na_value=np.nan))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"objective column {name!r} is not numeric: {exc}") from exc
    values = np.column_stack(columns)
    nan_rows = np.isnan(values).any(axis=1)
    if nan_rows.any():
        pos = int(np.flatnonzero(nan_rows)[0])
        bad = [n for n, v in zip(names, values[pos]) if np.isnan(v)]
        raise ValueError(
            f"row {_plain(df.index[pos])!r} has NaN in objective(s) {bad} "
            f"({int(nan_rows.sum())} such rows); filter out failed or pruned trials first"
        )
    return values


def pareto_ranks(
    df: pd.DataFrame, objectives: Mapping[str, Direction] | Sequence[str] | None = None
) -> pd.Series:
    """Non-dominated rank of every row of a results table.

    Args:
        df: One row per trial, with a numeric column per objective.
        objectives: Name -> direction mapping, or a list of names whose directions are
            taken from :data:`OBJECTIVE_DIRECTIONS`. Defaults to
            :data:`DEFAULT_OBJECTIVES` (accuracy up, step time and params down).

    Returns:
        Integer Series named ``"rank"`` with the same index as ``df``; 0 is the front.

    Raises:
        ValueError: If an objective name is unknown, a column is missing or not
            numeric, or a row has NaN in an objective (the message names the row).
        TypeError: If ``objectives`` is a bare string.
    """
    names, flags = _resolve_objectives(df, objectives)
    values = _objective_values(df, names)
    return pd.Series(non_dominated_ranks(values, flags), index=df.index, name="rank")


def pareto_front(
    df: pd.DataFrame, objectives: Mapping[str, Direction] | Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows of a results table that lie on the Pareto front.

    Args:
        df: One row per trial, with a numeric column per objective.
        objectives: As for :func:`pareto_ranks`.

    Returns:
        A copy of the non-dominated rows, in their original order with their original
        index; no columns are added (use :func:`pareto_ranks` for ranks).

    Raises:
        ValueError: As for :func:`pareto_ranks`.
        TypeError: As for :func:`pareto_ranks`.
    """
    names, flags = _resolve_objectives(df, objectives)
    values = _objective_values(df, names)
    return df.loc[pareto_mask(values, flags)].copy()


# ----------------------------------------------------------------------- hypervolume


def _hv_2d(p: np.ndarray, ref: np.ndarray) -> float:
    # Sort by x, then y, so of points sharing an x the lowest y comes first and the
    # others add nothing. Each point then adds the strip between the best y seen so far
    # and its own y, as wide as its distance to the reference in x.
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    best_before = np.concatenate(([ref[1]], np.minimum.accumulate(y)[:-1]))
    return float(np.sum((ref[0] - x) * np.clip(best_before - y, 0.0, None)))


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation points all strictly better than ``ref``."""
    k = p.shape[1]
    if p.shape[0] == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - p[:, 0].min())
    if k == 2:
        return _hv_2d(p, ref)
    # Slice along the last axis (HSO): between consecutive last-axis values the
    # dominated region is the (k-1)-D hypervolume of the points seen so far.
    order = np.argsort(p[:, -1], kind="stable")
    p = p[order]
    z = np.append(p[:, -1], ref[-1])
    total = 0.0
    for i in range(p.shape[0]):
        depth = z[i + 1] - z[i]
        if depth > 0:
            total += _hv(p[: i + 1, :-1], ref[:-1]) * depth
    return total


def hypervolume(
    points: np.ndarray, reference: Sequence[float], maximize: Sequence[bool]
) -> float:
    """Exact hypervolume dominated by a set of points, bounded by a reference point.

    Maximised axes are flipped so every axis is minimised. Points that do not strictly
    improve on the reference in every objective contribute nothing, and dominated
    points are dropped before the sweep. k = 2 is a sort-and-sweep in O(n log n);
    higher k slices along the last axis recursively (O(n^(k-1) log n)), fine for the
    fronts of a search (hundreds to a few thousand points at k = 3).

    Args:
        points: Array of shape (n, k); n may be 0.
        reference: The reference (nadir) point, k values, all finite.
        maximize: One flag per objective, True where larger is better.

    Returns:
        The hypervolume; 0.0 if no point improves on the reference, ``inf`` if a point
        is infinitely good in some objective.

    Raises:
        ValueError: If shapes disagree, the reference is not finite, or a point row
            contains NaN (the message names the row).
    """
    ref = np.asarray(reference, dtype=float).reshape(-1)
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 2 and arr.shape[0] == 0:
        arr = arr.reshape(0, ref.size)
    arr = _as_points(arr, "points")
    k = arr.shape[1]
    if ref.size != k:
        raise ValueError(f"reference has {ref.size} values but the points have {k} objectives")
    if not np.isfinite(ref).all():
        raise ValueError(f"reference must be finite, got {ref.tolist()}")
    flags = _as_maximize(maximize, k)
    _check_no_nan_rows(arr, "points")

    p = _to_minimization(arr, flags)
    r = _to_minimization(ref, flags)
    p = p[(p < r).all(axis=1)]
    if p.shape[0] == 0:
        return 0.0
    if not np.isfinite(p).all():
        # Only -inf can survive the filter: an unbounded box.
        return float("inf")
    # Dominated points add no volume; removing them (and duplicates) shrinks the
    # recursive sweep, which is what makes k >= 3 affordable.
    p, _ = _unique_rows(p)
    everyone = np.arange(p.shape[0])
    p = p[_dominance_counts(p, everyone, everyone) == 0]
    return _hv(p, r)


# ------------------------------------------------------------------------------ EDFs


def edf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical distribution function, as used for pycls-style error EDF plots.

    Args:
        values: Observations, e.g. errors (1 - accuracy) of the models in a space.

    Returns:
        ``(x, F)``: the distinct values in increasing order and, for each, the fraction
        of observations <= it. Tied observations give one step of the combined height,
        so ``F`` is strictly increasing and ends at 1.0. Plot with
        ``plt.step(x, F, where="post")``.

    Raises:
        ValueError: If ``values`` is empty or contains NaN (the message names the
            position).
    """
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size == 0:
        raise ValueError("edf needs at least one value, got none")
    nan = np.flatnonzero(np.isnan(arr))
    if nan.size:
        raise ValueError(
            f"values[{int(nan[0])}] is NaN ({nan.size} NaN values); filter them out first"
        )
    x, counts = np.unique(arr, return_counts=True)
    return x, np.cumsum(counts) / arr.size


def edf_by(df: pd.DataFrame, value: str, by: str) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """One empirical distribution function per group of rows.

    Args:
        df: Results table.
        value: Column whose distribution is wanted, e.g. ``"error"``.
        by: Column to group by, e.g. ``"stage3.block"``. Rows whose group is NaN form
            their own group rather than being dropped.

    Returns:
        Mapping from group key (in sorted order) to ``(x, F)`` as returned by
        :func:`edf`.

    Raises:
        ValueError: If a column is missing, or a value is NaN (the message names the
            row and group).
    """
    for role, column in (("value", value), ("by", by)):
        if column not in df.columns:
            raise ValueError(
                f"{role} column {column!r} is missing from the DataFrame; "
                f"columns are {list(df.columns)}"
            )
    result: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    for raw_key, group in df.groupby(by, sort=True, dropna=False):
        key = _plain(raw_key)
        col = group[value]
        if col.isna().any():
            row = _plain(col.index[col.isna().to_numpy()][0])
            raise ValueError(
                f"row {row!r} (group {by}={key!r}) has NaN in {value!r}; "
                "filter out failed trials first"
            )
        try:
            data = col.to_numpy(dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {value!r} is not numeric: {exc}") from exc
        result[key] = edf(data)
    return result
