"""A version's latency histogram over a window: what a canary compares without per-request data.

Pure code, no I/O. Every metrics source keeps latencies as cumulative bucket counters (Envoy's
``upstream_rq_time`` in the local mesh, Istio's ``istio_request_duration_milliseconds_bucket``
in Prometheus). ``LatencyHistogram`` is their increase over one window, per bucket; the
canary's latency gate tests two of them with ``mlshift._stats_tests.mann_whitney_binned`` (or
``tail_excess_binned``) when the target records no per-request latencies.
``histograms_from_counters`` reads it from the local mesh's counter reads, the way
``mlshift._frame.frame_from_counters`` reads the frame (restarts counted from zero again).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlshift._frame import Snapshot, _accumulate, _count_at
from mlshift._stats_tests import binned_quantile

__all__ = ["LatencyHistogram", "histograms_from_counters"]


@dataclass(frozen=True)
class LatencyHistogram:
    """Latencies (ms) counted in buckets: ``counts[i]`` observations in
    ``(edges[i - 1], edges[i]]`` (the first bucket from 0); the last edge is ``inf``.

    Example:
        >>> h = LatencyHistogram.from_cumulative([(10.0, 5.0), (20.0, 10.0), (math.inf, 10.0)])
        >>> h.counts, h.total, h.quantile(0.5)
        ((5.0, 5.0, 0.0), 10.0, 10.0)
    """

    edges: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_cumulative(cls, buckets: Iterable[tuple[float, float]]) -> LatencyHistogram:
        """From ``(upper bound, cumulative count)`` pairs in any order, as Prometheus and
        Envoy export them; equal bounds are summed, counts forced monotonic (buckets read a
        moment apart may disagree by a few observations), and an ``inf`` bucket added when
        missing (holding nothing beyond the highest bound).

        Example:
            >>> LatencyHistogram.from_cumulative([(5.0, 2.0), (1.0, 1.0)]).counts
            (1.0, 1.0, 0.0)
        """
        merged: dict[float, float] = defaultdict(float)
        for bound, count in buckets:
            merged[float(bound)] += float(count)
        edges = sorted(merged)
        if not edges or not math.isinf(edges[-1]):
            merged[math.inf] = merged[edges[-1]] if edges else 0.0
            edges.append(math.inf)
        counts, before = [], 0.0
        for bound in edges:
            now = max(merged[bound], before)
            counts.append(max(now - before, 0.0))
            before = now
        return cls(tuple(edges), tuple(counts))

    @property
    def total(self) -> float:
        """How many observations it holds."""
        return float(sum(self.counts))

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated within its bucket (PromQL's
        ``histogram_quantile``); NaN when empty."""
        return binned_quantile(self.edges, self.counts, q)


def histograms_from_counters(
    snaps: Sequence[Snapshot], *, start: float, end: float
) -> dict[str, LatencyHistogram]:
    """Each version's latency histogram over ``(start, end]`` from reads of its cumulative
    counters (include each version's last read before ``start``, as for
    ``frame_from_counters``); versions that observed nothing in the window are left out.

    Example:
        >>> inf = math.inf
        >>> snaps = [Snapshot(0, "v1", 0, 0, ((10, 0), (inf, 0))),
        ...          Snapshot(5, "v1", 8, 0, ((10, 6), (inf, 8)))]
        >>> histograms_from_counters(snaps, start=0, end=5)["v1"].counts
        (6.0, 2.0)
    """
    by_version: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snaps:
        by_version[snap.version].append(snap)
    out: dict[str, LatencyHistogram] = {}
    for version, series in by_version.items():
        series.sort(key=lambda s: s.timestamp)
        points = _accumulate(series)
        times = [p[0] for p in points]
        b0 = _count_at(points, times, start)[3]
        b1 = _count_at(points, times, end)[3]
        diff = [(bound, b1[bound] - b0.get(bound, 0.0)) for bound in b1]
        histogram = LatencyHistogram.from_cumulative(diff)
        if histogram.total > 0:
            out[version] = histogram
    return out
