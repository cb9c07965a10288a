"""The canary statistics: checked against scipy and by simulation (false-alarm rates)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlshift._stats_tests import (
    holm,
    look_alpha,
    mann_whitney,
    min_sample,
    sample_ratio,
    two_proportions,
    wilson,
)


def test_mann_whitney_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.lognormal(2.1, 0.3, 300), 1)
    y = np.round(rng.lognormal(2.0, 0.3, 500), 1)
    for tol in (0.0, 0.2):
        effect, p = mann_whitney(x, y, tolerance=tol)
        ref = stats.mannwhitneyu(
            x / (1 + tol), y, alternative="greater", method="asymptotic", use_continuity=True
        )
        assert p == pytest.approx(ref.pvalue, rel=1e-9)
        assert effect == pytest.approx(ref.statistic / (len(x) * len(y)))


def test_mann_whitney_tolerance_forgives_a_small_slowdown_only() -> None:
    rng = np.random.default_rng(2)
    stable = rng.lognormal(2.0, 0.3, 2000)
    assert mann_whitney(stable * 1.1, stable[::-1], tolerance=0.2)[1] > 0.5
    assert mann_whitney(stable * 1.4, stable[::-1], tolerance=0.2)[1] < 1e-6
    assert math.isnan(mann_whitney([], stable)[1])


def test_sample_ratio_matches_scipy_chisquare() -> None:
    share, p = sample_ratio(230, 1000, 0.25)
    ref = stats.chisquare([230, 770], [250, 750])
    assert share == 0.23
    assert p == pytest.approx(ref.pvalue)
    assert math.isnan(sample_ratio(0, 0, 0.5)[1])
    assert math.isnan(sample_ratio(10, 10, 1.0)[1])


def test_wilson_interval_by_hand() -> None:
    lo, hi = wilson(1800, 2000)
    # Wilson (1927), z = 1.959964: the interval for 90 % of 2,000.
    assert (round(lo, 4), round(hi, 4)) == (0.8861, 0.9124)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_two_proportions_detects_three_percent_against_half_a_percent() -> None:
    diff, p = two_proportions(30, 1000, 5, 1000, margin=0.005)
    assert diff == pytest.approx(0.025)
    assert p < 1e-3
    # The same rates are no failure: the margin forgives chance and the tolerance.
    assert two_proportions(5, 1000, 5, 1000, margin=0.005)[1] > 0.5
    assert math.isnan(two_proportions(0, 0, 1, 10)[1])


def test_two_proportions_false_alarm_rate_is_at_most_the_level() -> None:
    rng = np.random.default_rng(3)
    n_c, n_s, rate = 400, 4000, 0.01
    e_c = rng.binomial(n_c, rate, 20000)
    e_s = rng.binomial(n_s, rate, 20000)
    ps = np.array(
        [two_proportions(a, n_c, b, n_s, margin=0.0)[1] for a, b in zip(e_c, e_s, strict=True)]
    )
    assert (ps < 0.05).mean() <= 0.05


def test_holm_is_step_down() -> None:
    assert holm([0.001, 0.03, 0.04], alpha=0.05) == [True, False, False]
    assert holm([0.01, 0.02], alpha=0.05) == [True, True]
    assert holm([math.nan, 0.04], alpha=0.05) == [False, True]


def test_look_alpha_sums_to_alpha() -> None:
    assert sum(look_alpha(0.05, k) for k in range(1, 100_000)) == pytest.approx(0.05, rel=1e-4)
    with pytest.raises(ValueError):
        look_alpha(0.05, 0)


def test_min_sample_gives_the_promised_power() -> None:
    n = min_sample(0.01, 0.01)
    rng = np.random.default_rng(4)
    bad = rng.binomial(n, 0.03, 4000)
    stable = rng.binomial(50 * n, 0.01, 4000)
    ps = np.array(
        [two_proportions(a, n, b, 50 * n, margin=0.01)[1] for a, b in zip(bad, stable, strict=True)]
    )
    assert 0.75 <= (ps < 0.025).mean() <= 0.9
    with pytest.raises(ValueError):
        min_sample(0.01, 0)


def test_binomial_tail_matches_scipy() -> None:
    from mlshift._stats_tests import binomial_tail

    for k, n, p in ((3, 10, 0.1), (0, 5, 0.5), (7, 200, 0.01), (40, 100, 0.3)):
        assert binomial_tail(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9)
    assert binomial_tail(11, 10, 0.5) == 0.0


def test_tail_excess_sees_a_slower_p99_and_forgives_the_tolerance() -> None:
    from mlshift._stats_tests import tail_excess

    rng = np.random.default_rng(5)
    stable = rng.lognormal(2.0, 0.3, 4000)
    slow = rng.lognormal(2.0, 0.3, 800) * 1.4
    assert tail_excess(slow, stable, quantile=0.99, tolerance=0.2)[1] < 1e-4
    same = rng.lognormal(2.0, 0.3, 800) * 1.1
    assert tail_excess(same, stable, quantile=0.99, tolerance=0.2)[1] > 0.01
