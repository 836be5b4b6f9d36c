"""Rank statistics for the proxy-fidelity check: scipy's values, ties, bootstrap intervals, top-K."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from nas.rank_stats import (
    Correlation,
    bootstrap_interval,
    kendall_tau,
    rank_agreement,
    spearman_rho,
    top_k_overlap,
)

PROXY = [0.61, 0.64, 0.58, 0.70, 0.66, 0.52, 0.61, 0.49, 0.66, 0.60]
LONG = [0.71, 0.75, 0.70, 0.80, 0.74, 0.65, 0.72, 0.66, 0.78, 0.70]  # ties in both lists


def tau_b_by_hand(x, y):
    """Kendall's tau-b from its definition: (C - D) / sqrt((pairs - ties in x) (pairs - ties in y))."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            ties_x += dx == 0
            ties_y += dy == 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    pairs = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


def test_against_scipy_and_the_definitions_with_ties():
    assert kendall_tau(PROXY, LONG) == stats.kendalltau(PROXY, LONG, variant="b").statistic
    assert kendall_tau(PROXY, LONG) == pytest.approx(tau_b_by_hand(PROXY, LONG), abs=1e-12)
    assert spearman_rho(PROXY, LONG) == stats.spearmanr(PROXY, LONG).statistic
    ranks = np.corrcoef(stats.rankdata(PROXY), stats.rankdata(LONG))[0, 1]  # Pearson of average ranks
    assert spearman_rho(PROXY, LONG) == pytest.approx(ranks, abs=1e-12)
    assert (round(kendall_tau(PROXY, LONG), 6), round(spearman_rho(PROXY, LONG), 6)) == (0.873621, 0.960249)


def test_perfect_and_reversed():
    x = [1, 2, 3, 4, 5]
    assert kendall_tau(x, x) == pytest.approx(1.0) and spearman_rho(x, x) == pytest.approx(1.0)
    assert kendall_tau(x, x[::-1]) == pytest.approx(-1.0) and spearman_rho(x, x[::-1]) == pytest.approx(-1.0)


def test_constant_list_is_undefined_not_an_error():
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman_rho([1, 2, 3], [0.5, 0.5, 0.5]))
    agreement = rank_agreement([1, 1, 1], [1, 2, 3], k=1)
    assert agreement.kendall.resamples == 0 and math.isnan(agreement.kendall.low)


@pytest.mark.parametrize("statistic", [kendall_tau, spearman_rho])
def test_bootstrap_interval_is_seeded_and_contains_the_estimate(statistic):
    a = bootstrap_interval(PROXY, LONG, statistic, resamples=500, seed=7)
    assert a == bootstrap_interval(PROXY, LONG, statistic, resamples=500, seed=7)
    assert a != bootstrap_interval(PROXY, LONG, statistic, resamples=500, seed=8)
    assert a.low <= a.estimate <= a.high <= 1.0 and a.level == 0.9
    assert a.estimate == statistic(PROXY, LONG)
    wider = bootstrap_interval(PROXY, LONG, statistic, level=0.99, resamples=500, seed=7)
    assert wider.low <= a.low and wider.high >= a.high


def test_bootstrap_resamples_pairs_and_drops_degenerate_ones():
    # Three pairs: some resamples draw one pair three times (every x equal) and are dropped.
    x, y = [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]
    result = bootstrap_interval(x, y, kendall_tau, resamples=1000, seed=0)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 3, size=(1000, 3))
    usable = [d for d in draws if len(set(d)) > 1]
    assert result.resamples == len(usable) < 1000
    values = [kendall_tau(np.take(x, d), np.take(y, d)) for d in usable]
    assert (result.low, result.high) == tuple(np.percentile(values, [5, 95]))


def test_top_k_overlap():
    assert top_k_overlap(PROXY, LONG, k=3) == pytest.approx(2 / 3)  # proxy top 3: 3, 4, 8; long: 3, 8, 1
    assert top_k_overlap(PROXY, LONG, k=10) == 1.0
    assert top_k_overlap([3, 2, 1], [1, 2, 3], k=1) == 0.0
    # Equal scores at the K-th place: the earlier candidate ranks first.
    assert top_k_overlap([1.0, 1.0, 0.0], [1.0, 0.0, 0.5], k=1) == 1.0


def test_rank_agreement_json():
    agreement = rank_agreement(PROXY, LONG, k=3, resamples=200, seed=1)
    data = json.loads(json.dumps(agreement.to_dict()))
    assert data["n"] == 10 and data["top_k"] == 3 and data["top_k_overlap"] == pytest.approx(2 / 3)
    assert Correlation(**data["kendall"]) == agreement.kendall
    assert agreement.spearman == bootstrap_interval(PROXY, LONG, spearman_rho, resamples=200, seed=1)


@pytest.mark.parametrize("x, y, kwargs, message", [
    ([1, 2], [1, 2, 3], {}, "the two score lists differ in length: 2 and 3"),
    ([1], [1], {}, "ranking needs at least 2 candidates, got 1"),
    ([1, float("nan")], [1, 2], {}, "the first score list holds nan at position 1; scores must be finite"),
    ([1, 2], [1, 2], {"level": 1.0}, "level must be in (0, 1), got 1.0"),
    ([1, 2], [1, 2], {"resamples": 0}, "resamples must be a whole number >= 1, got 0"),
])
def test_bad_input(x, y, kwargs, message):
    with pytest.raises(ValueError) as err:
        bootstrap_interval(x, y, kendall_tau, **kwargs)
    assert str(err.value) == message


def test_bad_k():
    with pytest.raises(ValueError, match=r"k must be a whole number in \[1, 10\] \(the number of candidates\), got 11"):
        top_k_overlap(PROXY, LONG, k=11)


def test_doctests():
    import doctest

    import nas.rank_stats

    assert doctest.testmod(nas.rank_stats).failed == 0
