"""Canary gates: small objects that judge one look at a canary against its stable version.

A gate has one method, ``check(interval) -> Verdict``; anything with that method is a gate
(``Gate`` is a Protocol), so users can write their own. ``Interval`` carries what the run saw
since the current step began: the metrics frame rows of every version, the weights, and,
where the target records them, each version's per-request latencies (else its latency
histogram over the interval). A gate that needs more
says so in ``needs`` (``("predictions",)``, ``("comparison",)``): the run then also reads
the prediction counters (``Interval.predictions``) or pairs both versions' answers to
mirrored requests (``Interval.comparison``), and only then.

Statistical gates compare the canary with the stable version over the same interval and
report a p-value; they fail at ``interval.level``, the share of the run's ``alpha`` this look
may spend (``mlshift._stats_tests.look_alpha``: ``alpha / (k (k + 1))`` on look ``k``, so a
run looking any number of times falsely fails with probability at most ``alpha``). ``judge``
then applies Holm's correction across the gates of one look: a failure that does not survive
it becomes *inconclusive*. A verdict is one of:

- ``pass``: enough data and nothing wrong;
- ``fail``: the canary is worse than the tolerance allows (or breaks an absolute limit);
- ``inconclusive``: too little data to pass, and no evidence to fail;
- ``invalid``: the measurement itself is wrong (a sample-ratio mismatch: the canary did not
  get the share of requests its weight says), so the numbers cannot be trusted either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from mlshift._stats_tests import (
    holm,
    mann_whitney,
    mann_whitney_binned,
    min_sample,
    sample_ratio,
    tail_excess,
    tail_excess_binned,
    two_proportions,
)

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

    from mlshift._compare import Comparison
    from mlshift._histogram import LatencyHistogram

__all__ = [
    "ErrorRate",
    "Gate",
    "Interval",
    "Latency",
    "MaxErrorRate",
    "MaxLatency",
    "SampleRatio",
    "Status",
    "Verdict",
    "default_gates",
    "judge",
]

MESH_HINT = "no healthy pod, connection failures or timeouts; see ep.status()"

Status = Literal["pass", "fail", "inconclusive", "invalid"]
_SEVERITY: dict[str, int] = {"pass": 0, "inconclusive": 1, "fail": 2, "invalid": 3}


@dataclass(frozen=True)
class Verdict:
    """What one gate (or the whole judge) says about one look.

    Example:
        >>> Verdict("errors", "fail", "error rate 3.0 % vs 0.5 %", {"p_value": 1e-6}).status
        'fail'
    """

    gate: str
    status: Status
    reason: str
    numbers: Mapping[str, float] = field(default_factory=dict)
    p_value: float = math.nan
    """Set by statistical gates; ``judge`` corrects failures across gates with Holm."""


@dataclass(frozen=True)
class Interval:
    """One look at a canary: what every version did since the current step began.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"version": ["v1", "v2"], "requests": [900.0, 100.0],
        ...                       "errors": [1.0, 0.0], "p99_ms": [5.0, 6.0]})
        >>> Interval("v2", "v1", {"v1": 90, "v2": 10}, frame).totals("v2")
        (100.0, 0.0)
    """

    canary: str
    stable: str
    weights: Mapping[str, int]
    frame: pd.DataFrame
    latencies: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    """Per-request latencies in ms by version, where the target records them."""
    alpha: float = 0.05
    """The run's false-failure budget."""
    level: float = 0.025
    """What this look may spend of it (``look_alpha(alpha, look)``)."""
    look: int = 1
    predictions: pd.DataFrame | None = None
    """``ep.predictions`` over the interval, ``divergence`` against ``stable``; read when a
    gate ``needs`` ``"predictions"``."""
    comparison: Comparison | None = None
    """``ep.compare(stable, canary)`` over the interval (pairs of mirrored requests); read
    when a gate ``needs`` ``"comparison"``."""
    unavailable: Mapping[str, str] = field(default_factory=dict)
    """What could not be read for this look (``"predictions"``, ``"comparison"``) and why."""
    histograms: Mapping[str, LatencyHistogram] = field(default_factory=dict)
    """Each version's latency histogram over the interval (the router's or Prometheus's
    buckets), read where per-request latencies are not there."""

    def rows(self, version: str) -> pd.DataFrame:
        """The frame rows of ``version``."""
        return self.frame[self.frame["version"] == version]

    def totals(self, version: str) -> tuple[float, float]:
        """``(requests, errors)`` of ``version`` over the interval, as callers saw them.

        5xx the mesh made on the way (``mesh_errors``: no healthy pod, connection failures,
        timeouts) never reached the version and are not in its own counts; callers saw them,
        so they count as requests and as errors against it.
        """
        rows = self.rows(version)
        if rows.empty:
            return 0.0, 0.0
        mesh = float(rows["mesh_errors"].fillna(0).sum()) if "mesh_errors" in rows else 0.0
        requests = float(rows["requests"].fillna(0).sum()) + mesh
        return requests, float(rows["errors"].fillna(0).sum()) + mesh

    def mesh_note(self, version: str) -> str:
        """`` (N of them made by the mesh: ...)`` when the mesh failed requests to ``version``."""
        rows = self.rows(version)
        mesh = float(rows["mesh_errors"].fillna(0).sum()) if "mesh_errors" in rows else 0.0
        if not mesh:
            return ""
        return f" ({mesh:.0f} of them made by the mesh: {MESH_HINT})"

    def quantile(self, version: str, q: float = 0.99) -> float:
        """The ``q`` latency quantile of ``version`` (ms): from per-request latencies when
        there are some, else from its histogram over the interval, else the request-weighted
        mean of the frame's p99 column."""
        lat = self.latencies.get(version)
        if lat is not None and len(lat):
            return float(np.quantile(lat, q))
        histogram = self.histograms.get(version)
        if histogram is not None and histogram.total > 0:
            return histogram.quantile(q)
        rows = self.rows(version).dropna(subset=["p99_ms"])
        weights = rows["requests"].fillna(0)
        if rows.empty or not weights.sum() > 0:
            return math.nan
        return float((rows["p99_ms"] * weights).sum() / weights.sum())


class Gate(Protocol):
    """Anything with ``name`` and ``check(interval) -> Verdict`` is a gate.

    Example:
        >>> class AtLeast100:
        ...     name = "volume"
        ...     def check(self, interval: Interval) -> Verdict:
        ...         n, _ = interval.totals(interval.canary)
        ...         return Verdict(self.name, "pass" if n >= 100 else "inconclusive", f"{n:.0f}")
    """

    @property
    def name(self) -> str:
        """A short name for tables and reasons."""
        ...

    def check(self, interval: Interval) -> Verdict:
        """Judge one look."""
        ...


@dataclass(frozen=True)
class ErrorRate:
    """Relative error gate: fail when the canary's 5xx rate is worse than stable's by more
    than ``tolerance`` (absolute points: 0.005 = half a point), beyond chance.

    An interval passes only once the canary has ``min_requests`` requests (by default
    derived from the tolerance and the stable rate: ``mlshift._stats_tests.min_sample``);
    strong evidence of harm fails it earlier.

    Example:
        >>> ErrorRate(tolerance=0.005).name
        'error-rate'
    """

    tolerance: float = 0.005
    min_requests: int | None = None
    name: str = "error-rate"

    def needed(self, baseline: float, alpha: float) -> int:
        """Canary requests needed before a pass counts."""
        if self.min_requests is not None:
            return self.min_requests
        return min_sample(max(baseline, 0.001), self.tolerance, alpha=alpha)

    def check(self, interval: Interval) -> Verdict:
        n_c, e_c = interval.totals(interval.canary)
        n_s, e_s = interval.totals(interval.stable)
        if n_c <= 0 or n_s <= 0:
            return Verdict(self.name, "inconclusive", "no requests to compare")
        diff, p = two_proportions(e_c, n_c, e_s, n_s, margin=self.tolerance)
        need = self.needed(e_s / n_s, interval.alpha)
        numbers = {
            "canary_error_rate": e_c / n_c,
            "stable_error_rate": e_s / n_s,
            "difference": diff,
            "canary_requests": n_c,
            "needed": float(need),
            "p_value": p,
        }
        text = (
            f"errors {e_c / n_c:.2%} vs {interval.stable} {e_s / n_s:.2%}"
            f" (tolerance +{self.tolerance:.2%}, p={p:.2g}, n={n_c:.0f})"
        )
        if p < interval.level:
            return Verdict(
                self.name, "fail", text + interval.mesh_note(interval.canary), numbers, p
            )
        if n_c < need:
            return Verdict(self.name, "inconclusive", f"{text}; needs {need}", numbers, p)
        return Verdict(self.name, "pass", text, numbers, p)


@dataclass(frozen=True)
class Latency:
    """Relative latency gate: fail when the canary's latencies, divided by ``1 + tolerance``
    (0.2: "no more than 20 % slower"), are still greater than stable's (Mann–Whitney U on
    per-request latencies: the whole distribution, as Kayenta). With ``quantile`` (0.99:
    "p99 no more than 20 % worse") it tests that quantile instead: a binomial test on how
    many canary requests exceed ``1 + tolerance`` times stable's p99. Without per-request
    latencies both tests run on the versions' latency histograms over the interval (bucket
    counts, uniform within each bucket: ``mann_whitney_binned``, ``tail_excess_binned``);
    without those either, it compares the frame's p99 with the tolerance (a point estimate,
    no test).

    Example:
        >>> Latency(tolerance=0.2).name
        'latency'
    """

    tolerance: float = 0.2
    min_requests: int = 100
    quantile: float | None = None
    name: str = "latency"

    def check(self, interval: Interval) -> Verdict:
        c, s = interval.canary, interval.stable
        tested = self._test(interval)
        if tested is not None:
            return self._tested(interval, *tested)
        p99_c, p99_s = interval.quantile(c), interval.quantile(s)
        numbers = {"canary_p99_ms": p99_c, "stable_p99_ms": p99_s}
        n_c, _ = interval.totals(c)
        if n_c < self.min_requests or math.isnan(p99_c) or math.isnan(p99_s):
            return Verdict(self.name, "inconclusive", f"{n_c:.0f} requests with latencies")
        text = f"p99 {p99_c:.1f} ms vs {s} {p99_s:.1f} ms (tolerance +{self.tolerance:.0%})"
        ok = p99_c <= p99_s * (1 + self.tolerance)
        return Verdict(self.name, "pass" if ok else "fail", text, numbers)

    def _test(self, interval: Interval) -> tuple[float, float, str, float] | None:
        """``(effect, p, what was tested, canary count)`` on per-request latencies, else on
        histogram buckets; None when neither is there for both versions."""
        c, s = interval.canary, interval.stable
        tol, q = self.tolerance, self.quantile
        lat_c, lat_s = interval.latencies.get(c), interval.latencies.get(s)
        hist_c, hist_s = interval.histograms.get(c), interval.histograms.get(s)
        if lat_c is not None and lat_s is not None and len(lat_c) and len(lat_s):
            n, data = float(len(lat_c)), ""
            if q is None:
                effect, p = mann_whitney(lat_c, lat_s, tolerance=tol)
            else:
                effect, p = tail_excess(lat_c, lat_s, quantile=q, tolerance=tol)
        elif hist_c is not None and hist_s is not None and hist_c.total and hist_s.total:
            n, data = hist_c.total, " on histogram buckets"
            both = (hist_c.edges, hist_c.counts, hist_s.counts)
            if q is None:
                effect, p = mann_whitney_binned(*both, tolerance=tol, stable_edges=hist_s.edges)
            else:
                effect, p = tail_excess_binned(
                    *both, quantile=q, tolerance=tol, stable_edges=hist_s.edges
                )
        else:
            return None
        test = "Mann-Whitney" if q is None else f"share above the limit {effect:.1%}, binomial"
        return effect, p, test + data, n

    def _tested(self, interval: Interval, effect: float, p: float, test: str, n: float) -> Verdict:
        c, s = interval.canary, interval.stable
        q = 0.99 if self.quantile is None else self.quantile
        q_c, q_s = interval.quantile(c, q), interval.quantile(s, q)
        numbers = {
            "canary_p99_ms": interval.quantile(c),
            "stable_p99_ms": interval.quantile(s),
            "effect": effect,
            "canary_requests": n,
            "p_value": p,
        }
        text = (
            f"p{q * 100:g} {q_c:.1f} ms vs {s} {q_s:.1f} ms (tolerance +{self.tolerance:.0%},"
            f" {test} p={p:.2g}, n={n:.0f})"
        )
        if p < interval.level:
            return Verdict(self.name, "fail", text, numbers, p)
        if n < self.min_requests:
            return Verdict(self.name, "inconclusive", f"{text}; needs {self.min_requests}")
        return Verdict(self.name, "pass", text, numbers, p)


@dataclass(frozen=True)
class MaxErrorRate:
    """Absolute limit on the canary's 5xx share (0.01 = 1 %), as Flagger and Argo check.

    Example:
        >>> MaxErrorRate(0.05).limit
        0.05
    """

    limit: float = 0.01
    min_requests: int = 20
    name: str = "max-error-rate"

    def check(self, interval: Interval) -> Verdict:
        n, e = interval.totals(interval.canary)
        if n < self.min_requests:
            return Verdict(self.name, "inconclusive", f"{n:.0f} requests (< {self.min_requests})")
        numbers = {"canary_error_rate": e / n, "canary_requests": n}
        if e / n > self.limit:
            reason = (
                f"error rate {e / n:.1%} > {self.limit:.1%}{interval.mesh_note(interval.canary)}"
            )
            return Verdict(self.name, "fail", reason, numbers)
        return Verdict(self.name, "pass", f"error rate {e / n:.1%} <= {self.limit:.1%}", numbers)


@dataclass(frozen=True)
class MaxLatency:
    """Absolute limit on the canary's p99 latency in ms.

    Example:
        >>> MaxLatency(250).p99_ms
        250
    """

    p99_ms: float
    min_requests: int = 20
    name: str = "max-p99"

    def check(self, interval: Interval) -> Verdict:
        n, _ = interval.totals(interval.canary)
        p99 = interval.quantile(interval.canary)
        if n < self.min_requests or math.isnan(p99):
            return Verdict(self.name, "inconclusive", f"{n:.0f} requests (< {self.min_requests})")
        ok = p99 <= self.p99_ms
        text = f"p99 {p99:.1f} ms {'<=' if ok else '>'} {self.p99_ms:g} ms"
        return Verdict(self.name, "pass" if ok else "fail", text, {"canary_p99_ms": p99})


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio mismatch: the canary's share of (canary + stable) requests against its
    share of their weights (chi-square). A mismatch beyond chance is *invalid*: routing does
    not do what the weights say, so neither a pass nor a failure can be trusted.

    Example:
        >>> SampleRatio().name
        'sample-ratio'
    """

    min_requests: int = 50
    name: str = "sample-ratio"

    def check(self, interval: Interval) -> Verdict:
        n_c, _ = interval.totals(interval.canary)
        n_s, _ = interval.totals(interval.stable)
        w_c = interval.weights.get(interval.canary, 0)
        w_s = interval.weights.get(interval.stable, 0)
        total = n_c + n_s
        if total < self.min_requests or w_c + w_s == 0:
            return Verdict(
                self.name, "inconclusive", f"{total:.0f} requests (< {self.min_requests})"
            )
        expected = w_c / (w_c + w_s)
        share, p = sample_ratio(n_c, total, expected)
        numbers = {"observed_share": share, "expected_share": expected, "p_value": p}
        text = f"canary share {share:.1%} for weight share {expected:.1%} (p={p:.2g})"
        if not math.isnan(p) and p < interval.level:
            return Verdict(self.name, "invalid", f"sample-ratio mismatch: {text}", numbers, p)
        return Verdict(self.name, "pass", text, numbers, p)


def default_gates() -> list[Gate]:
    """The gates a canary runs when given none: relative errors (+0.5 points), relative
    latency (+20 %) and the sample-ratio check.

    Example:
        >>> [g.name for g in default_gates()]
        ['error-rate', 'latency', 'sample-ratio']
    """
    return [ErrorRate(), Latency(), SampleRatio()]


def judge(interval: Interval, gates: Sequence[Gate]) -> tuple[Verdict, list[Verdict]]:
    """Run every gate on one look; correct statistical failures across gates (Holm at
    ``interval.level``); return the overall verdict (the worst) and each gate's.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"version": ["v1", "v2"], "requests": [5000.0, 5000.0],
        ...                       "errors": [25.0, 150.0], "p99_ms": [5.0, 5.0]})
        >>> overall, _ = judge(Interval("v2", "v1", {"v1": 50, "v2": 50}, frame), [ErrorRate()])
        >>> overall.status
        'fail'
    """
    verdicts = [gate.check(interval) for gate in gates]
    tested = [i for i, v in enumerate(verdicts) if not math.isnan(v.p_value)]
    rejected = holm([verdicts[i].p_value for i in tested], interval.level)
    for i, keep in zip(tested, rejected, strict=True):
        v = verdicts[i]
        if v.status in ("fail", "invalid") and not keep:
            verdicts[i] = replace(
                v,
                status="inconclusive",
                reason=f"{v.reason}; not significant after Holm over {len(tested)} tests",
            )
    if not verdicts:
        return Verdict("judge", "inconclusive", "no gates"), verdicts
    worst = max(verdicts, key=lambda v: _SEVERITY[v.status])
    bad = [v for v in verdicts if v.status == worst.status]
    reason = "; ".join(f"{v.gate}: {v.reason}" for v in bad)
    numbers = {f"{v.gate}.{k}": x for v in verdicts for k, x in v.numbers.items()}
    return Verdict("judge", worst.status, reason, numbers), verdicts
