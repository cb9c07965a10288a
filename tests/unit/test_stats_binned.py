"""The latency tests on histogram buckets: by hand, never failing identical histograms, and
against the per-request tests on the same samples binned into Istio's and into fine buckets."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from mlshift._frame import Snapshot, histogram_quantile
from mlshift._histogram import LatencyHistogram, histograms_from_counters
from mlshift._stats_tests import (
    binned_quantile,
    mann_whitney,
    mann_whitney_binned,
    tail_excess,
    tail_excess_binned,
)

INF = math.inf
# Envoy's default buckets as Istio exports them (ms).
ISTIO = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000, INF,
)  # fmt: skip
FINE = (*np.round(np.geomspace(1.0, 400.0, 120), 3).tolist(), INF)


def _bin(samples: npt.NDArray[np.float64], edges: tuple[float, ...]) -> npt.NDArray[np.int64]:
    """Per-bucket counts of ``samples`` in ``(edges[i-1], edges[i]]``, as ``le`` buckets."""
    return np.bincount(
        np.searchsorted(np.asarray(edges), samples, side="left"), minlength=len(edges)
    )


def _z_p(u: float, n1: float, n2: float) -> float:
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize(
    ("canary", "stable", "effect"),
    [
        ([0, 40, 0], [40, 0, 0], 1.0),  # (1, 2] entirely above (0, 1]
        ([40, 0, 0], [0, 40, 0], 0.0),
        ([20, 0, 0], [20, 0, 0], 0.5),  # the same bucket: uniform against uniform
        ([20, 20, 0], [40, 0, 0], 0.75),  # U(0, 2) > U(0, 1): (1/2)(1/2) + 1/2
        ([0, 0, 30], [30, 0, 0], 1.0),  # +Inf: a point at 2, above (0, 1]
        ([0, 0, 30], [0, 30, 0], 1.0),  # a point at the top of (1, 2]: above all of it
        ([0, 0, 30], [0, 0, 30], 0.5),  # two equal points: a tie counts a half
    ],
)
def test_effect_by_hand(canary: list[float], stable: list[float], effect: float) -> None:
    got, p = mann_whitney_binned([1.0, 2.0, INF], canary, stable)
    assert got == pytest.approx(effect)
    n1, n2 = sum(canary), sum(stable)
    assert p == pytest.approx(_z_p(effect * n1 * n2, n1, n2))


def test_tolerance_scales_the_canary_buckets() -> None:
    # (1, 2] divided by 1.5 is (2/3, 4/3]: against U(0, 1] that is
    # P = (1/(2/3)) * [integral of F over (2/3, 1] + (4/3 - 1)] = 1.5 * (5/18 + 1/3) = 11/12.
    effect, _ = mann_whitney_binned([1.0, 2.0, INF], [0, 10, 0], [10, 0, 0], tolerance=0.5)
    assert effect == pytest.approx(11 / 12)


def test_identical_histograms_never_fail() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        counts = rng.integers(0, 50, len(ISTIO)) * (rng.random(len(ISTIO)) < 0.4)
        counts[rng.integers(len(ISTIO))] += 1
        for tol in (0.0, 0.2):
            effect, p = mann_whitney_binned(ISTIO, counts, counts, tolerance=tol)
            assert effect <= 0.5 + 1e-12
            assert p >= 0.5
            share, p_tail = tail_excess_binned(ISTIO, counts, counts, quantile=0.99, tolerance=tol)
            assert share <= 0.01 + 1e-9
            assert p_tail >= 0.05


def test_a_canary_slower_than_the_tolerance_fails_one_within_it_passes() -> None:
    rng = np.random.default_rng(8)
    stable = _bin(rng.lognormal(math.log(40), 0.3, 4000), ISTIO)
    slow = _bin(rng.lognormal(math.log(40), 0.3, 400) * 1.6, ISTIO)
    within = _bin(rng.lognormal(math.log(40), 0.3, 400) * 1.1, ISTIO)
    assert mann_whitney_binned(ISTIO, slow, stable, tolerance=0.2)[1] < 1e-6
    assert mann_whitney_binned(ISTIO, within, stable, tolerance=0.2)[1] > 0.5
    assert math.isnan(mann_whitney_binned(ISTIO, [0] * len(ISTIO), stable)[1])


@pytest.mark.parametrize("shift", [1.0, 1.1, 1.2, 1.3, 1.5])
@pytest.mark.parametrize("tolerance", [0.0, 0.2])
def test_close_to_mann_whitney_on_the_raw_samples(shift: float, tolerance: float) -> None:
    rng = np.random.default_rng(int(shift * 100) + int(tolerance * 10))
    stable = rng.lognormal(3.0, 0.4, 3000)
    canary = rng.lognormal(3.0, 0.4, 300) * shift
    raw_effect, raw_p = mann_whitney(canary, stable, tolerance=tolerance)
    fine_effect, fine_p = mann_whitney_binned(
        FINE, _bin(canary, FINE), _bin(stable, FINE), tolerance=tolerance
    )
    assert fine_effect == pytest.approx(raw_effect, abs=0.005)
    # Fine buckets: the same test (log p within 10 %, or both above 0.1).
    if raw_p > 0.1:
        assert fine_p > 0.05
    else:
        assert math.log(fine_p) == pytest.approx(math.log(raw_p), rel=0.1)
    # Istio's coarse buckets lose power (a shift within one bucket is invisible) but never
    # fail what the raw samples pass.
    _, istio_p = mann_whitney_binned(
        ISTIO, _bin(canary, ISTIO), _bin(stable, ISTIO), tolerance=tolerance
    )
    if raw_p > 0.05:
        assert istio_p > 0.05
    if raw_p < 1e-9:
        assert istio_p < 1e-4


def test_binned_quantile_is_prometheus_histogram_quantile() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        counts = rng.integers(0, 30, len(ISTIO)).astype(float)
        cumulative = list(zip(ISTIO, np.cumsum(counts), strict=True))
        for q in (0.5, 0.9, 0.99):
            assert binned_quantile(ISTIO, counts, q) == pytest.approx(
                histogram_quantile(q, cumulative)
            )
    assert math.isnan(binned_quantile(ISTIO, [0] * len(ISTIO), 0.5))


def test_tail_excess_on_buckets_against_the_raw_samples() -> None:
    rng = np.random.default_rng(10)
    stable = rng.lognormal(3.0, 0.2, 5000)
    # The median unchanged, 5 % of requests 5x slower: p99 several times stable's.
    canary = rng.lognormal(3.0, 0.2, 600)
    canary[:30] *= 5
    raw_share, raw_p = tail_excess(canary, stable, quantile=0.99, tolerance=0.2)
    share, p = tail_excess_binned(
        FINE, _bin(canary, FINE), _bin(stable, FINE), quantile=0.99, tolerance=0.2
    )
    assert share == pytest.approx(raw_share, abs=0.005)
    assert p < 1e-6 and raw_p < 1e-6
    _, istio_p = tail_excess_binned(
        ISTIO, _bin(canary, ISTIO), _bin(stable, ISTIO), quantile=0.99, tolerance=0.2
    )
    assert istio_p < 1e-3
    # Mann-Whitney on the whole distribution forgives this tail: 95 % of it is unchanged.
    assert mann_whitney_binned(FINE, _bin(canary, FINE), _bin(stable, FINE), tolerance=0.2)[1] > 0.5


def test_buckets_of_different_bounds_are_compared() -> None:
    # Stable in Istio's default buckets, the canary with a pod's finer ones.
    rng = np.random.default_rng(11)
    stable, canary = rng.lognormal(3.0, 0.3, 2000), rng.lognormal(3.0, 0.3, 500) * 1.6
    _, p = mann_whitney_binned(
        FINE, _bin(canary, FINE), _bin(stable, ISTIO), tolerance=0.2, stable_edges=ISTIO
    )
    assert p < 1e-6


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="rise"):
        mann_whitney_binned([5.0, 1.0, INF], [1, 1, 0], [1, 1, 0])
    with pytest.raises(ValueError, match="one count per bucket"):
        mann_whitney_binned([1.0, INF], [1, 1, 0], [1, 1])


def test_histogram_from_cumulative_counts() -> None:
    h = LatencyHistogram.from_cumulative([(INF, 10.0), (5.0, 4.0), (1.0, 1.0), (5.0, 1.0)])
    assert h.edges == (1.0, 5.0, INF)
    assert h.counts == (1.0, 4.0, 5.0)  # equal bounds summed, as Prometheus does
    assert h.total == 10.0
    # Counts read a moment apart that went down are forced monotonic; no +Inf: one added.
    assert LatencyHistogram.from_cumulative([(1.0, 3.0), (5.0, 2.0)]).counts == (3.0, 0.0, 0.0)


def test_histograms_from_counters_over_a_window_and_a_restart() -> None:
    def snap(t: float, n1: float, n_inf: float) -> Snapshot:
        return Snapshot(t, "v1", n_inf, 0.0, ((10.0, n1), (INF, n_inf)))

    # 5 observations when the window opens; 7 more, then a restart and 3 more: 5 + 5.
    snaps = [snap(0, 5, 5), snap(10, 9, 12), snap(11, 1, 3), Snapshot(11, "v2", 0, 0, ())]
    hists = histograms_from_counters(snaps, start=0, end=11)
    assert hists["v1"].counts == (5.0, 5.0)
    assert "v2" not in hists  # nothing observed: left out


@pytest.mark.parametrize("edges", [ISTIO, FINE], ids=["istio", "fine"])
def test_false_failures_of_healthy_canaries_stay_within_alpha(edges: tuple[float, ...]) -> None:
    """400 healthy canaries (the same distribution as stable), tested at 5 % without any
    tolerance: the share failed stays within 5 % (up to three binomial standard errors)."""
    rng = np.random.default_rng(12)
    mw = tail = 0
    runs = 400
    for _ in range(runs):
        stable = _bin(rng.lognormal(math.log(20), 0.5, 2000), edges)
        canary = _bin(rng.lognormal(math.log(20), 0.5, 300), edges)
        mw += mann_whitney_binned(edges, canary, stable)[1] < 0.05
        tail += tail_excess_binned(edges, canary, stable, quantile=0.95, tolerance=0.0)[1] < 0.05
    limit = 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    assert mw / runs <= limit
    assert tail / runs <= limit
