"""Tests for nas.pareto: dominance, non-dominated sorting, hypervolume, EDFs."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from nas.pareto import (
    DEFAULT_OBJECTIVES,
    OBJECTIVE_DIRECTIONS,
    dominates,
    edf,
    edf_by,
    hypervolume,
    non_dominated_ranks,
    pareto_front,
    pareto_mask,
    pareto_ranks,
)

# ------------------------------------------------------------------ brute-force refs


def _ref_dominates(a, b, maximize) -> bool:
    better_or_equal = all((x >= y) if m else (x <= y) for x, y, m in zip(a, b, maximize))
    strictly = any((x > y) if m else (x < y) for x, y, m in zip(a, b, maximize))
    return better_or_equal and strictly


def _ref_ranks(values: np.ndarray, maximize) -> np.ndarray:
    """Peel fronts with plain Python loops: obviously correct, O(n^3)."""
    n = len(values)
    ranks = np.full(n, -1)
    rank = 0
    while (ranks < 0).any():
        left = [i for i in range(n) if ranks[i] < 0]
        front = [
            i for i in left if not any(_ref_dominates(values[j], values[i], maximize) for j in left)
        ]
        ranks[front] = rank
        rank += 1
    return ranks


def _random_points(seed: int, n: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Small integer range forces ties on single coordinates; copied rows add exact
    # duplicates, the cases an exact sort most easily gets wrong.
    pts = rng.integers(0, 6, size=(n, k)).astype(float)
    dup = rng.integers(0, n, size=n // 5)
    return np.concatenate([pts, pts[dup]])[rng.permutation(n + n // 5)]


MIXED = {2: [[False, False], [True, False], [True, True]],
         3: [[False, False, False], [True, False, False], [False, True, True], [True, True, True]]}
CASES = [(seed, k, mx) for seed in range(4) for k in (2, 3) for mx in MIXED[k]]


# ------------------------------------------------------------------------- dominance


def test_dominates_basic_and_directions():
    assert dominates([1, 1], [2, 2], [False, False])
    assert not dominates([2, 2], [1, 1], [False, False])
    assert dominates([2, 2], [1, 1], [True, True])
    assert dominates([2, 1], [1, 1], [True, False])
    assert not dominates([1, 2], [2, 1], [False, False])  # trade-off
    assert not dominates([1, 1], [1, 1], [False, False])  # identical points
    assert dominates([1, 1], [1, 2], [False, False])  # tie on one axis, better on other


def test_dominates_errors():
    with pytest.raises(ValueError, match="a has 2 objectives but b has 3"):
        dominates([1, 2], [1, 2, 3], [False, False])
    with pytest.raises(ValueError, match="maximize has 1 entries"):
        dominates([1, 2], [1, 2], [False])
    with pytest.raises(ValueError, match="NaN"):
        dominates([np.nan, 2], [1, 2], [False, False])


# ------------------------------------------------------------------ non-dominated sort


@pytest.mark.parametrize("seed,k,maximize", CASES)
def test_ranks_match_brute_force(seed, k, maximize):
    values = _random_points(seed, 60, k)
    expected = _ref_ranks(values, maximize)
    got = non_dominated_ranks(values, maximize)
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(pareto_mask(values, maximize), expected == 0)


@pytest.mark.parametrize("seed", range(3))
def test_ranks_continuous_values(seed):
    values = np.random.default_rng(100 + seed).normal(size=(80, 3))
    maximize = [True, False, True]
    np.testing.assert_array_equal(
        non_dominated_ranks(values, maximize), _ref_ranks(values, maximize)
    )


def test_ranks_are_consistent_with_dominance():
    values = _random_points(7, 50, 3)
    maximize = [False, True, False]
    ranks = non_dominated_ranks(values, maximize)
    for i, j in itertools.permutations(range(len(values)), 2):
        if dominates(values[i], values[j], maximize):
            assert ranks[i] < ranks[j]


def test_duplicates_of_front_point_are_all_on_front():
    values = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_array_equal(non_dominated_ranks(values, [False, False]), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(
        pareto_mask(values, [False, False]), [True, True, False, True, True]
    )
    # -0.0 and 0.0 are the same value: neither dominates the other.
    signed_zero = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(non_dominated_ranks(signed_zero, [False, True]), [1, 1, 0])


def test_ranks_chain_and_edge_sizes():
    chain = np.array([[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(non_dominated_ranks(chain, [False, False]), [2, 0, 1])
    np.testing.assert_array_equal(non_dominated_ranks(chain, [True, True]), [0, 2, 1])
    assert non_dominated_ranks(np.zeros((0, 2)), [False, False]).shape == (0,)
    assert pareto_mask(np.zeros((0, 2)), [False, False]).shape == (0,)
    np.testing.assert_array_equal(non_dominated_ranks([[5.0, 1.0]], [True, False]), [0])


def test_ranks_ten_thousand_points():
    values = np.random.default_rng(0).random((10_000, 3))
    ranks = non_dominated_ranks(values, [False, False, False])
    front = values[ranks == 0]
    # No front point dominates another, and every rank-1 point is dominated by a front point.
    for p in front[:50]:
        assert not ((front <= p).all(axis=1) & (front < p).any(axis=1)).any()
    for p in values[ranks == 1][:50]:
        assert ((front <= p).all(axis=1) & (front < p).any(axis=1)).any()


def test_ranks_errors():
    with pytest.raises(ValueError, match="row 2 contains NaN"):
        non_dominated_ranks(np.array([[1.0, 2.0], [2.0, 1.0], [np.nan, 0.0]]), [False, False])
    with pytest.raises(ValueError, match="row 0 contains NaN"):
        pareto_mask(np.array([[1.0, np.nan]]), [False, False])
    with pytest.raises(ValueError, match="maximize has 3 entries"):
        non_dominated_ranks(np.zeros((4, 2)), [False, False, True])
    with pytest.raises(ValueError, match="2-D"):
        non_dominated_ranks(np.zeros(4), [False])


# ------------------------------------------------------------------------ DataFrames


@pytest.fixture()
def results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "accuracy": [0.90, 0.80, 0.95, 0.85, 0.90, 0.70],
            "step_time": [2.0, 1.0, 3.0, 2.5, 2.0, 1.0],
            "params": [5.0, 3.0, 9.0, 6.0, 5.0, 4.0],
            "arch": ["a", "b", "c", "d", "e", "f"],
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def test_directions_tables():
    assert DEFAULT_OBJECTIVES == {
        "accuracy": "maximize", "step_time": "minimize", "params": "minimize"
    }
    for name, direction in DEFAULT_OBJECTIVES.items():
        assert OBJECTIVE_DIRECTIONS[name] == direction
    assert OBJECTIVE_DIRECTIONS["reward"] == "maximize"
    assert OBJECTIVE_DIRECTIONS["macs"] == "minimize"


def test_pareto_front_default_objectives(results):
    front = pareto_front(results)
    # d is dominated by a/e (worse in all three), f by b (same time, worse acc and params).
    assert list(front.index) == [10, 11, 12, 14]
    assert list(front.columns) == list(results.columns)
    pd.testing.assert_frame_equal(front, results.loc[[10, 11, 12, 14]])


def test_pareto_ranks_same_index(results):
    ranks = pareto_ranks(results)
    assert ranks.name == "rank"
    assert list(ranks.index) == list(results.index)
    assert ranks.to_dict() == {10: 0, 11: 0, 12: 0, 13: 1, 14: 0, 15: 1}


def test_pareto_front_named_and_mapping_objectives(results):
    # Accuracy and step time only: d is still beaten by a, f by b (tie on time).
    front = pareto_front(results, ["accuracy", "step_time"])
    assert list(front.index) == [10, 11, 12, 14]
    # A mapping can flip a direction: minimise accuracy (a silly but valid request).
    front = pareto_front(results, {"accuracy": "minimize", "params": "minimize"})
    assert list(front.index) == [11, 15]


def test_pareto_front_does_not_modify_input(results):
    before = results.copy()
    front = pareto_front(results)
    front.loc[10, "accuracy"] = 0.0
    pd.testing.assert_frame_equal(results, before)


def test_pareto_front_errors(results):
    with pytest.raises(ValueError, match="'macs' is missing"):
        pareto_front(results, ["accuracy", "macs"])
    with pytest.raises(ValueError, match="'step_time' is missing"):
        pareto_front(results.drop(columns="step_time"))
    with pytest.raises(ValueError, match="unknown objective 'latency'"):
        pareto_ranks(results, ["accuracy", "latency"])
    with pytest.raises(ValueError, match="direction 'up'"):
        pareto_front(results, {"accuracy": "up"})
    with pytest.raises(ValueError, match="empty"):
        pareto_front(results, [])
    with pytest.raises(TypeError, match=r"did you mean \['accuracy'\]"):
        pareto_front(results, "accuracy")
    with pytest.raises(ValueError, match="'arch' is not numeric"):
        pareto_front(results, {"arch": "minimize"})
    bad = results.copy()
    bad.loc[13, "accuracy"] = np.nan
    with pytest.raises(ValueError, match=r"row 13 has NaN in objective\(s\) \['accuracy'\]"):
        pareto_front(bad)


def test_pareto_front_empty_frame(results):
    empty = results.iloc[:0]
    assert pareto_front(empty).empty
    assert pareto_ranks(empty).empty


# ----------------------------------------------------------------------- hypervolume


def test_hv_2d_staircase():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(pts, [4, 4], [False, False]) == pytest.approx(6.0)
    # Order, duplicates and a dominated point do not change it.
    more = np.vstack([pts[::-1], pts[:1], [[3.0, 3.0]]])
    assert hypervolume(more, [4, 4], [False, False]) == pytest.approx(6.0)


def test_hv_single_point_is_box():
    assert hypervolume([[1.0, 2.0]], [4.0, 5.0], [False, False]) == pytest.approx(9.0)
    assert hypervolume([[1.0, 2.0, 3.0]], [2.0, 4.0, 7.0], [False] * 3) == pytest.approx(8.0)
    assert hypervolume([[0.5]], [2.0], [False]) == pytest.approx(1.5)


def test_hv_3d_two_overlapping_boxes():
    a, b = np.array([1.0, 2.0, 0.0]), np.array([2.0, 1.0, 1.0])
    ref = np.array([4.0, 4.0, 4.0])
    box = lambda p: float(np.prod(ref - p))  # noqa: E731
    overlap = float(np.prod(ref - np.maximum(a, b)))
    expected = box(a) + box(b) - overlap  # 24 + 18 - 12 = 30
    assert expected == pytest.approx(30.0)
    assert hypervolume(np.array([a, b]), ref, [False] * 3) == pytest.approx(expected)


def test_hv_3d_three_boxes_inclusion_exclusion():
    pts = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    ref = np.array([3.0, 3.0, 3.0])
    total = 0.0
    for size in (1, 2, 3):
        for combo in itertools.combinations(range(3), size):
            corner = pts[list(combo)].max(axis=0)
            total += (-1) ** (size + 1) * np.prod(np.clip(ref - corner, 0, None))
    assert hypervolume(pts, ref, [False] * 3) == pytest.approx(total)


def test_hv_points_beyond_reference_ignored():
    pts = np.array([[1.0, 1.0], [5.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    # Only (1,1) improves strictly on (4,4) in both objectives; (0,4) ties on y.
    assert hypervolume(pts, [4, 4], [False, False]) == pytest.approx(9.0)
    assert hypervolume([[5.0, 5.0]], [4, 4], [False, False]) == 0.0
    assert hypervolume(np.zeros((0, 3)), [1, 1, 1], [False] * 3) == 0.0


def test_hv_maximize_flips():
    # accuracy up, time down: (0.9, 1), (0.8, 0.5) w.r.t. reference (0.5, 2).
    pts = np.array([[0.9, 1.0], [0.8, 0.5]])
    expected = 0.4 * 1.0 + 0.3 * 0.5  # strip for (0.9,1) plus the extra under (0.8,0.5)
    assert hypervolume(pts, [0.5, 2.0], [True, False]) == pytest.approx(expected)
    # Negating a maximised axis and minimising gives the same number.
    flipped = pts * np.array([-1.0, 1.0])
    assert hypervolume(flipped, [-0.5, 2.0], [False, False]) == pytest.approx(expected)
    assert hypervolume([[3.0, 3.0]], [1.0, 1.0], [True, True]) == pytest.approx(4.0)


def test_hv_infinitely_good_point():
    assert hypervolume([[-np.inf, 1.0]], [2.0, 2.0], [False, False]) == float("inf")


@pytest.mark.parametrize("seed", range(3))
def test_hv_3d_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    pts = rng.random((30, 3))
    maximize = [True, False, True]
    ref = np.array([0.0, 1.0, 0.0])
    hv = hypervolume(pts, ref, maximize)
    samples = rng.random((200_000, 3))  # the box spanned by ref and (1, 0, 1)
    covered = np.zeros(len(samples), dtype=bool)
    for q in pts:
        # Dominated by q: no more accurate on the maximised axes, no faster on time.
        covered |= (samples[:, 0] <= q[0]) & (samples[:, 1] >= q[1]) & (samples[:, 2] <= q[2])
    estimate = covered.mean()  # box volume is 1
    assert hv == pytest.approx(estimate, abs=0.01)


@pytest.mark.parametrize("seed", range(2))
def test_hv_4d_matches_inclusion_exclusion(seed):
    pts = np.random.default_rng(seed).random((6, 4))
    ref = np.ones(4)
    total = 0.0
    for size in range(1, 7):
        for combo in itertools.combinations(range(6), size):
            corner = pts[list(combo)].max(axis=0)
            total += (-1) ** (size + 1) * np.prod(ref - corner)
    assert hypervolume(pts, ref, [False] * 4) == pytest.approx(total)


def test_hv_errors():
    with pytest.raises(ValueError, match="reference has 3 values"):
        hypervolume([[1.0, 2.0]], [4, 4, 4], [False, False])
    with pytest.raises(ValueError, match="reference must be finite"):
        hypervolume([[1.0, 2.0]], [4, np.inf], [False, False])
    with pytest.raises(ValueError, match="points row 1 contains NaN"):
        hypervolume([[1.0, 2.0], [np.nan, 1.0]], [4, 4], [False, False])
    with pytest.raises(ValueError, match="maximize has 1 entries"):
        hypervolume([[1.0, 2.0]], [4, 4], [False])


# ------------------------------------------------------------------------------ EDFs


def test_edf_ties_monotone_ends_at_one():
    x, f = edf([0.3, 0.1, 0.2, 0.1, 0.3, 0.3])
    np.testing.assert_array_equal(x, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(f, [2 / 6, 3 / 6, 1.0])
    assert (np.diff(x) > 0).all() and (np.diff(f) > 0).all()
    assert f[-1] == 1.0


def test_edf_matches_definition():
    vals = np.random.default_rng(0).integers(0, 10, size=200).astype(float)
    x, f = edf(vals)
    for xi, fi in zip(x, f):
        assert fi == pytest.approx((vals <= xi).mean())
    assert f[-1] == 1.0


def test_edf_errors():
    with pytest.raises(ValueError, match="at least one value"):
        edf([])
    with pytest.raises(ValueError, match=r"values\[1\] is NaN"):
        edf([0.1, np.nan])


def test_edf_by_groups():
    df = pd.DataFrame(
        {
            "stage3.block": ["mbconv", "fused", "mbconv", "fused", "mbconv"],
            "error": [0.2, 0.3, 0.1, 0.3, 0.2],
        }
    )
    curves = edf_by(df, "error", "stage3.block")
    assert list(curves) == ["fused", "mbconv"]
    x, f = curves["fused"]
    np.testing.assert_array_equal(x, [0.3])
    np.testing.assert_array_equal(f, [1.0])
    x, f = curves["mbconv"]
    np.testing.assert_array_equal(x, [0.1, 0.2])
    np.testing.assert_allclose(f, [1 / 3, 1.0])


def test_edf_by_errors():
    df = pd.DataFrame({"g": ["a", "b"], "error": [0.1, np.nan]}, index=["t0", "t1"])
    with pytest.raises(ValueError, match="by column 'group' is missing"):
        edf_by(df, "error", "group")
    with pytest.raises(ValueError, match="value column 'err' is missing"):
        edf_by(df, "err", "g")
    with pytest.raises(ValueError, match=r"row 't1' \(group g='b'\) has NaN in 'error'"):
        edf_by(df, "error", "g")
