"""The statistics a canary judge needs, pure and small: no I/O, numpy and ``math`` only.

- ``two_proportions``: is the canary's error rate worse than the stable one's by more than a
  margin? One-sided z test on the Agresti–Caffo adjusted difference (one success and one
  failure added to each group), which behaves with zero errors and small samples.
- ``mann_whitney``: are the canary's latencies, divided by ``1 + tolerance``, still
  stochastically greater than the stable ones? One-sided Mann–Whitney U with the normal
  approximation and tie correction (Kayenta's test, with a tolerance).
- ``tail_excess``: is the canary's p99 (or another quantile) more than ``1 + tolerance``
  times stable's? A one-sided binomial test on how many canary latencies exceed that limit.
- ``mann_whitney_binned``, ``tail_excess_binned``: the same two tests on histogram buckets
  (Prometheus's, Envoy's), where per-request latencies are not recorded: latencies are taken
  as uniform within each bucket, the assumption Prometheus's ``histogram_quantile`` makes.
- ``sample_ratio``: does the canary's observed share of requests match its weight?
  Chi-square goodness of fit with one degree of freedom.
- ``wilson``: a confidence interval for a proportion (agreement rates).
- ``holm``: which of several p-values to reject at a family-wise level.
- ``look_alpha``: the level spent on look ``k`` of a run that may look any number of times:
  ``alpha / (k (k + 1))``, which sums to ``alpha`` over every look, so by the union bound the
  chance of *any* false failure over a whole run is at most ``alpha`` however long it runs and
  however dependent the looks are (an anytime-valid alpha-spending rule).
- ``min_sample``: how many canary requests an interval needs before a pass means something.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = [
    "binned_quantile",
    "binomial_tail",
    "holm",
    "look_alpha",
    "mann_whitney",
    "mann_whitney_binned",
    "min_sample",
    "normal_quantile",
    "sample_ratio",
    "tail_excess",
    "tail_excess_binned",
    "two_proportions",
    "wilson",
]

_NORMAL = NormalDist()


def normal_quantile(p: float) -> float:
    """The standard normal quantile: ``normal_quantile(0.975)`` is about 1.96.

    Example:
        >>> round(normal_quantile(0.975), 2)
        1.96
    """
    return _NORMAL.inv_cdf(p)


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportions(
    errors_c: float, n_c: float, errors_s: float, n_s: float, *, margin: float = 0.0
) -> tuple[float, float]:
    """One-sided test that the canary's rate exceeds the stable rate by more than ``margin``.

    Returns ``(difference, p_value)``: the observed rate difference (canary - stable) and the
    p-value of H0 ``p_c - p_s <= margin`` against H1 ``p_c - p_s > margin``. NaN p-value
    when either group has no requests.

    Example:
        >>> diff, p = two_proportions(30, 1000, 5, 1000, margin=0.005)
        >>> round(diff, 3), p < 0.001
        (0.025, True)
    """
    if n_c <= 0 or n_s <= 0:
        return math.nan, math.nan
    diff = errors_c / n_c - errors_s / n_s
    pc, ps = (errors_c + 1) / (n_c + 2), (errors_s + 1) / (n_s + 2)
    se = math.sqrt(pc * (1 - pc) / (n_c + 2) + ps * (1 - ps) / (n_s + 2))
    return diff, _upper_tail((pc - ps - margin) / se)


def _ranks(values: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    """Average ranks (1-based) and the tie term sum(t^3 - t)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    _, starts, counts = np.unique(ordered, return_index=True, return_counts=True)
    avg = starts + (counts + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks, float(np.sum(counts.astype(np.float64) ** 3 - counts))


def mann_whitney(
    canary: Sequence[float] | npt.ArrayLike,
    stable: Sequence[float] | npt.ArrayLike,
    *,
    tolerance: float = 0.0,
) -> tuple[float, float]:
    """One-sided Mann–Whitney U: are canary values / (1 + tolerance) greater than stable ones?

    Returns ``(effect, p_value)``: the common-language effect size P(canary' > stable) (0.5:
    no shift) and the p-value of H0 "not greater" (normal approximation with tie correction,
    as ``scipy.stats.mannwhitneyu(..., alternative="greater", method="asymptotic")``). NaN
    when either sample is empty.

    Example:
        >>> effect, p = mann_whitney([12, 13, 14, 15] * 20, [10, 11, 12, 13] * 20)
        >>> effect > 0.5, p < 0.01
        (True, True)
    """
    x = np.asarray(canary, dtype=np.float64) / (1.0 + tolerance)
    y = np.asarray(stable, dtype=np.float64)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    ranks, ties = _ranks(np.concatenate([x, y]))
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u / (n1 * n2), 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)  # continuity correction
    return u / (n1 * n2), _upper_tail(z)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact).

    Example:
        >>> round(binomial_tail(3, 10, 0.1), 4)
        0.0702
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [
        base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def tail_excess(
    canary: npt.ArrayLike, stable: npt.ArrayLike, *, quantile: float, tolerance: float
) -> tuple[float, float]:
    """Is the canary's ``quantile`` more than ``1 + tolerance`` times stable's?

    The limit is ``(1 + tolerance)`` x stable's ``quantile`` (taken as known: the stable
    sample is the larger one at small canary weights); if the canary's quantile were within
    it, at most ``1 - quantile`` of its values would exceed it. Returns ``(share above the
    limit, p_value)`` of the one-sided binomial test; NaN when a sample is empty.

    Example:
        >>> share, p = tail_excess([30.0] * 20 + [10.0] * 180, [10.0] * 990 + [20.0] * 10,
        ...                        quantile=0.99, tolerance=0.2)
        >>> share, p < 1e-6
        (0.1, True)
    """
    x = np.asarray(canary, dtype=np.float64)
    y = np.asarray(stable, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan
    limit = float(np.quantile(y, quantile)) * (1.0 + tolerance)
    above = int(np.sum(x > limit))
    return above / len(x), binomial_tail(above, len(x), 1.0 - quantile)


def _pieces(
    edges: Sequence[float] | npt.ArrayLike, counts: Sequence[float] | npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Buckets as pieces ``(lo, hi, count)``: bucket ``i`` spans ``(edges[i-1], edges[i]]``
    (the first from 0), the ``+Inf`` bucket is a point at the highest finite bound, as
    Prometheus's ``histogram_quantile`` reads them. Empty buckets are dropped."""
    hi = np.asarray(edges, dtype=np.float64)
    n = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    if hi.shape != n.shape or hi.ndim != 1:
        raise ValueError(f"need one count per bucket bound, got {n.shape} and {hi.shape}")
    if len(hi) and (np.any(np.diff(hi) <= 0) or np.any(np.isnan(hi))):
        raise ValueError(f"bucket bounds must rise strictly, got {hi.tolist()}")
    lo = np.concatenate([[min(0.0, float(hi[0]))] if len(hi) else [], hi[:-1]])
    top = np.isinf(hi)
    if top.any():
        last = float(hi[~top][-1]) if (~top).any() else 0.0
        lo[top], hi[top] = last, last
    keep = n > 0
    return lo[keep], hi[keep], n[keep]


def _mean_cdf(
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    d: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """P(U > V) for U uniform on [a, b] and V uniform on [c, d] (arrays broadcast), either
    may be a point (a == b, c == d); a tie between two equal points counts a half.

    For a piece U it is the mean of V's CDF F over [a, b]: ``(G(b) - G(a)) / (b - a)`` with
    ``G`` the integral of ``F``: 0 below c, ``(x - c)^2 / (2 (d - c))`` within, and
    ``(d - c) / 2 + (x - d)`` above; for a point U it is ``F(a)``.
    """
    width = d - c
    point_v = width <= 0
    safe = np.where(point_v, 1.0, width)

    def cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        inside = np.clip((x - c) / safe, 0.0, 1.0)
        # A point V: below it 0, above it 1, on it a half (the tie).
        at_point = np.where(x > c, 1.0, np.where(x == c, 0.5, 0.0))
        return np.where(point_v, at_point, inside)

    def integral(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        piece = np.where(
            x <= c, 0.0, np.where(x >= d, width / 2.0 + (x - d), (x - c) ** 2 / (2.0 * safe))
        )
        return np.where(point_v, np.maximum(x - c, 0.0), piece)

    span = b - a
    point_u = span <= 0
    mean = (integral(b) - integral(a)) / np.where(point_u, 1.0, span)
    return np.where(point_u, cdf(a), mean)


def mann_whitney_binned(
    edges: Sequence[float] | npt.ArrayLike,
    counts_c: Sequence[float] | npt.ArrayLike,
    counts_s: Sequence[float] | npt.ArrayLike,
    *,
    tolerance: float = 0.0,
    stable_edges: Sequence[float] | npt.ArrayLike | None = None,
) -> tuple[float, float]:
    """``mann_whitney`` on bucketed latencies: per-bucket counts over upper bounds ``edges``
    (``stable_edges`` when stable's buckets differ from the canary's).

    Latencies are taken as uniform within each bucket (the assumption Prometheus's
    ``histogram_quantile`` makes; the ``+Inf`` bucket is a point at the highest finite
    bound). The canary's buckets are scaled by ``1 / (1 + tolerance)``, then
    P(canary' > stable) is computed in closed form over every pair of pieces
    (``_mean_cdf``), ``U = n_c n_s P``, and the one-sided p-value comes from the normal
    approximation with variance ``n_c n_s (n_c + n_s + 1) / 12`` (no ties: the pieces are
    continuous; real ties only lower the variance, so this errs toward passing) and the
    same continuity correction as ``mann_whitney``. Identical histograms give the effect
    0.5 at most and p > 0.5: a canary cannot fail for what the buckets cannot tell apart.
    Counts may be fractions (Prometheus's ``increase()``). Returns ``(effect, p_value)``;
    NaN when either histogram is empty.

    Example:
        >>> edges = [5, 10, 25, 50, float("inf")]
        >>> effect, p = mann_whitney_binned(edges, [0, 10, 80, 10, 0], [50, 40, 10, 0, 0])
        >>> effect > 0.9, p < 1e-6
        (True, True)
    """
    a, b, w_c = _pieces(edges, counts_c)
    c, d, w_s = _pieces(edges if stable_edges is None else stable_edges, counts_s)
    n1, n2 = float(w_c.sum()), float(w_s.sum())
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan
    scale = 1.0 + tolerance
    pairs = _mean_cdf(a[:, None] / scale, b[:, None] / scale, c[None, :], d[None, :])
    effect = float(w_c @ pairs @ w_s) / (n1 * n2)
    u = effect * n1 * n2
    var = n1 * n2 * (n1 + n2 + 1.0) / 12.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return effect, _upper_tail(z)


def binned_quantile(
    edges: Sequence[float] | npt.ArrayLike, counts: Sequence[float] | npt.ArrayLike, q: float
) -> float:
    """The ``q`` quantile of per-bucket ``counts``, interpolated within its bucket as
    Prometheus's ``histogram_quantile`` does (the highest finite bound when it falls in the
    ``+Inf`` bucket); NaN without observations.

    Example:
        >>> binned_quantile([10, 20, float("inf")], [5, 5, 0], 0.5)
        10.0
    """
    lo, hi, n = _pieces(edges, counts)
    total = float(n.sum())
    if total <= 0:
        return math.nan
    cumulative = np.cumsum(n)
    rank = q * total
    i = min(int(np.searchsorted(cumulative, rank, side="left")), len(n) - 1)
    below = float(cumulative[i] - n[i])
    return float(lo[i] + (hi[i] - lo[i]) * (rank - below) / n[i])


def tail_excess_binned(
    edges: Sequence[float] | npt.ArrayLike,
    counts_c: Sequence[float] | npt.ArrayLike,
    counts_s: Sequence[float] | npt.ArrayLike,
    *,
    quantile: float,
    tolerance: float,
    stable_edges: Sequence[float] | npt.ArrayLike | None = None,
) -> tuple[float, float]:
    """``tail_excess`` on bucketed latencies (per-bucket counts over upper bounds ``edges``;
    ``stable_edges`` when stable's buckets differ from the canary's).

    The limit is ``(1 + tolerance)`` x stable's ``quantile`` (``binned_quantile``); the
    canary's count above it is interpolated within the bucket holding it (uniform within
    buckets, as ``mann_whitney_binned``), rounded down, and tested with the one-sided
    binomial test against ``1 - quantile``. Identical histograms put at most ``1 -
    quantile`` above the limit. Returns ``(share above the limit, p_value)``; NaN when a
    histogram is empty.

    Example:
        >>> edges = [10, 20, 50, 100, float("inf")]
        >>> share, p = tail_excess_binned(edges, [900, 40, 0, 60, 0], [950, 50, 0, 0, 0],
        ...                               quantile=0.99, tolerance=0.2)
        >>> round(share, 3), p < 1e-6
        (0.06, True)
    """
    lo, hi, n = _pieces(edges, counts_c)
    n1 = float(n.sum())
    stable = edges if stable_edges is None else stable_edges
    limit = binned_quantile(stable, counts_s, quantile) * (1.0 + tolerance)
    if n1 <= 0 or math.isnan(limit):
        return math.nan, math.nan
    width = np.where(hi > lo, hi - lo, 1.0)
    above_share = np.where(hi > lo, np.clip((hi - limit) / width, 0.0, 1.0), lo > limit)
    above = float(n @ above_share)
    return above / n1, binomial_tail(math.floor(above + 1e-9), math.floor(n1 + 1e-9), 1 - quantile)


def sample_ratio(observed: float, total: float, expected_share: float) -> tuple[float, float]:
    """Chi-square test of one group's share of ``total`` against ``expected_share`` (0-1).

    Returns ``(observed share, p_value)``; NaN p-value without traffic or when the expected
    share is 0 or 1 (nothing can deviate).

    Example:
        >>> share, p = sample_ratio(100, 1000, 0.25)
        >>> share, p < 1e-9
        (0.1, True)
    """
    if total <= 0:
        return math.nan, math.nan
    share = observed / total
    if not 0 < expected_share < 1:
        return share, math.nan
    exp_a, exp_b = total * expected_share, total * (1 - expected_share)
    chi2 = (observed - exp_a) ** 2 / exp_a + (total - observed - exp_b) ** 2 / exp_b
    return share, math.erfc(math.sqrt(chi2 / 2.0))  # chi-square survival function, 1 dof


def wilson(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion; ``(nan, nan)`` when ``n`` is 0.

    Example:
        >>> lo, hi = wilson(1800, 2000)
        >>> round(lo, 3), round(hi, 3)
        (0.886, 0.912)
    """
    if n <= 0:
        return math.nan, math.nan
    z = normal_quantile(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rule: which hypotheses to reject at family-wise level ``alpha``.

    NaN p-values are never rejected and do not count as hypotheses.

    Example:
        >>> holm([0.001, 0.03, 0.04], alpha=0.05)
        [True, False, False]
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - rank):
            break
        rejected[i] = True
    return rejected


def look_alpha(alpha: float, look: int) -> float:
    """The level spent on look ``look`` (1, 2, ...): ``alpha / (look (look + 1))``.

    Summed over every look it is ``alpha``: checking as often as wanted keeps the chance of
    any false failure over the whole run at most ``alpha``.

    Example:
        >>> [round(look_alpha(0.05, k), 4) for k in (1, 2, 3)]
        [0.025, 0.0083, 0.0042]
    """
    if look < 1:
        raise ValueError(f"looks count from 1, got {look}")
    return alpha / (look * (look + 1))


def min_sample(
    baseline: float, tolerance: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Canary requests one interval needs to fail a canary twice the tolerance worse.

    With the stable rate ``baseline`` and the margin ``tolerance``, a canary at
    ``baseline + 2 * tolerance`` is failed with probability ``power`` by a one-sided test at
    level ``alpha / 2`` (the first look's level), when the stable version's sample is much
    larger than the canary's (as it is at small canary weights).

    Example:
        >>> min_sample(0.01, 0.01)
        2285
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    bad = min(baseline + 2 * tolerance, 1.0)
    z = normal_quantile(1 - alpha / 2) + normal_quantile(power)
    return max(1, math.ceil(z * z * bad * (1 - bad) / tolerance**2))
