"""The per-version metrics frame: its columns, Prometheus-style quantiles, and counter diffing.

Pure code, no I/O. Every metrics source (Prometheus with Istio's metrics, Envoy's admin stats
in the local mesh) ends in the same tidy ``pandas.DataFrame``, one row per (time, version):

    timestamp   interval end, ``datetime64[ns, UTC]``
    version     the version name
    requests    requests in the interval
    rps         requests per second
    errors      5xx responses in the interval
    error_rate  errors / requests, NaN when there were no requests
    p50_ms, p95_ms, p99_ms   latency quantiles (ms) from histogram buckets, NaN without observations
    share       this version's part of all requests in the interval (0-1), NaN when none
    mesh_errors 5xx the mesh made itself on the way to the version (no healthy upstream,
                connection failure, timeout, no route), which the version never saw, so
                ``errors`` misses them; NaN where the source cannot tell them apart (the
                local router counts them in ``errors`` already)

"No data" is NaN, never 0, so a canary gate can call it inconclusive instead of healthy.

Sources that read cumulative counters at instants (the local mesh) hand ``Snapshot`` objects
to ``frame_from_counters``, which reads them as the cumulative counters they are: every
request the counters saw lands in exactly one interval, whatever the step, so the requests
of a window add up to what the router answered in it (``frame_from_snapshots`` diffs
consecutive snapshots as they come, one row per pair).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

__all__ = [
    "FLOAT_COLUMNS",
    "FRAME_COLUMNS",
    "GAP_S",
    "Snapshot",
    "empty_frame",
    "frame_from_counters",
    "frame_from_snapshots",
    "histogram_quantile",
    "normalize_frame",
]

FRAME_COLUMNS = [
    "timestamp",
    "version",
    "requests",
    "rps",
    "errors",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "share",
    "mesh_errors",
]
FLOAT_COLUMNS = FRAME_COLUMNS[2:]
_TIMESTAMP_DTYPE: Final = "datetime64[ns, UTC]"
_QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


def empty_frame() -> pd.DataFrame:
    """Return the metrics frame with no rows: its columns with their dtypes.

    Example:
        >>> list(empty_frame().columns) == FRAME_COLUMNS
        True
    """
    return pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype=_TIMESTAMP_DTYPE),
            "version": pd.Series([], dtype="str"),
            **{name: pd.Series([], dtype="float64") for name in FLOAT_COLUMNS},
        }
    )


def normalize_frame(rows: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Return ``rows`` as a metrics frame: contract columns and dtypes, sorted by time, version.

    ``timestamp`` may be epoch seconds or datetimes; missing float columns become NaN.

    Example:
        >>> normalize_frame([{"timestamp": 0.0, "version": "v1", "rps": 2.0}]).rps.tolist()
        [2.0]
    """
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    if df.empty:
        return empty_frame()
    ts = df["timestamp"]
    if pd.api.types.is_numeric_dtype(ts):
        df["timestamp"] = pd.to_datetime(ts, unit="s", utc=True)
    else:
        df["timestamp"] = pd.to_datetime(ts, utc=True)
    df["timestamp"] = df["timestamp"].astype(_TIMESTAMP_DTYPE)
    df["version"] = df["version"].astype("str")
    for name in FLOAT_COLUMNS:
        df[name] = df[name].astype("float64") if name in df else math.nan
    df = df[FRAME_COLUMNS].sort_values(["timestamp", "version"], kind="stable")
    return df.reset_index(drop=True)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Return the ``q``-quantile of a histogram, the way PromQL's ``histogram_quantile`` does.

    Args:
        q: the quantile, 0-1 (below 0 gives -inf, above 1 gives +inf, as in PromQL).
        buckets: ``(upper bound, cumulative count)`` pairs in any order; the ``+inf`` bucket
            must be present (it holds the total count).

    Returns:
        The quantile, linearly interpolated inside the bucket holding it; the highest finite
        bound when it falls in the ``+inf`` bucket; NaN when there are no observations, fewer
        than two buckets, or no ``+inf`` bucket.

    Example:
        >>> histogram_quantile(0.5, [(10.0, 5.0), (20.0, 10.0), (math.inf, 10.0)])
        10.0
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted((float(b), float(c)) for b, c in buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return math.nan
    # Coalesce equal bounds (Prometheus sums them) and force counts to be monotonic, since
    # buckets scraped at slightly different moments may disagree by a few observations.
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    for i in range(1, len(merged)):
        merged[i][1] = max(merged[i][1], merged[i - 1][1])
    if len(merged) < 2:
        return math.nan
    total = merged[-1][1]
    if not total > 0:
        return math.nan
    rank = q * total
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of one version, read from a source at one instant.

    Attributes:
        timestamp: when they were read, epoch seconds. Snapshots of several versions taken in
            one read should carry the same timestamp, so their shares can be computed.
        version: the version name.
        requests: requests served since the counters started.
        errors: 5xx responses since the counters started.
        buckets: latency histogram in ms, ``(upper bound, cumulative count)``, incl. ``+inf``.

    Example:
        >>> Snapshot(0.0, "v1", requests=10, errors=1, buckets=((5.0, 8), (math.inf, 10))).errors
        1
    """

    timestamp: float
    version: str
    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...] = ()


def _is_reset(prev: Snapshot, cur: Snapshot) -> bool:
    """Whether the counters restarted between two snapshots (the process was restarted)."""
    if cur.requests < prev.requests or cur.errors < prev.errors:
        return True
    before = dict(prev.buckets)
    return any(count < before.get(bound, 0.0) for bound, count in cur.buckets)


def _interval_row(prev: Snapshot, cur: Snapshot) -> dict[str, Any]:
    """One frame row (without ``share``) for the interval between two snapshots."""
    seconds = cur.timestamp - prev.timestamp
    if _is_reset(prev, cur):
        # Like PromQL's rate(): after a reset the counter counts from zero again, so what it
        # holds now is what happened in the interval.
        requests, errors, buckets = cur.requests, cur.errors, list(cur.buckets)
    else:
        before = dict(prev.buckets)
        requests = cur.requests - prev.requests
        errors = cur.errors - prev.errors
        buckets = [(bound, count - before.get(bound, 0.0)) for bound, count in cur.buckets]
    row: dict[str, Any] = {
        "timestamp": cur.timestamp,
        "version": cur.version,
        "requests": float(requests),
        "rps": requests / seconds,
        "errors": float(errors),
        "error_rate": errors / requests if requests > 0 else math.nan,
    }
    # Quantiles follow the histogram's own observations, not the request counter: Envoy
    # counts requests at once but merges histograms only at its stats flush, so under load
    # an interval's latencies can arrive in the next interval (NaN when there are none).
    for column, q in _QUANTILES.items():
        row[column] = histogram_quantile(q, buckets)
    return row


def _frame_with_shares(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The frame of ``rows``, each with its version's part of its interval's requests."""
    if not rows:
        return empty_frame()
    totals: dict[float, float] = defaultdict(float)
    for row in rows:
        totals[row["timestamp"]] += row["requests"]
    for row in rows:
        total = totals[row["timestamp"]]
        row["share"] = row["requests"] / total if total > 0 else math.nan
    return normalize_frame(rows)


def frame_from_snapshots(snaps: Sequence[Snapshot], *, since: float | None = None) -> pd.DataFrame:
    """Turn cumulative snapshots into the metrics frame, one row per (interval end, version).

    Consecutive snapshots of each version (ordered by time) are diffed; counters that went
    down mean the server restarted, and the newer values are taken as the interval's counts.
    A version's first snapshot only opens its first interval. ``share`` is the version's part
    of all requests among the snapshots that share the interval-end timestamp.

    Args:
        snaps: snapshots of any versions, in any order.
        since: epoch seconds; keep only intervals that end at or after it.

    Returns:
        The metrics frame (``FRAME_COLUMNS``), sorted by timestamp then version; the empty
        frame when fewer than two snapshots of any version are given.

    Example:
        >>> inf = math.inf
        >>> snaps = [Snapshot(0, "v1", 0, 0, ((10, 0), (inf, 0))),
        ...          Snapshot(10, "v1", 50, 5, ((10, 50), (inf, 50)))]
        >>> frame_from_snapshots(snaps)[["rps", "error_rate"]].values.tolist()
        [[5.0, 0.1]]
    """
    by_version: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snaps:
        by_version[snap.version].append(snap)
    rows: list[dict[str, Any]] = []
    for series in by_version.values():
        series.sort(key=lambda s: s.timestamp)
        for prev, cur in itertools.pairwise(series):
            if cur.timestamp <= prev.timestamp:
                continue  # a duplicate read carries no interval
            if since is not None and cur.timestamp < since:
                continue
            rows.append(_interval_row(prev, cur))
    return _frame_with_shares(rows)


GAP_S = 3.0
"""Reads further apart than this (seconds) are a gap nobody sampled: interpolated across."""
_Point = tuple[float, float, float, dict[float, float]]
"""(time, requests, errors, latency buckets), accumulated across counter restarts."""


def _accumulate(series: Sequence[Snapshot]) -> list[_Point]:
    """One version's snapshots (by time) as monotonic counters: after a restart the counters
    count from zero again, so what they hold then is added, never subtracted."""
    points: list[_Point] = []
    prev: Snapshot | None = None
    for cur in series:
        if prev is None:
            req, err, bks = cur.requests, cur.errors, dict(cur.buckets)
        else:
            _, req, err, bks = points[-1]
            if _is_reset(prev, cur):
                d_req, d_err, d_bks = cur.requests, cur.errors, dict(cur.buckets)
            else:
                before = dict(prev.buckets)
                d_req, d_err = cur.requests - prev.requests, cur.errors - prev.errors
                d_bks = {b: c - before.get(b, 0.0) for b, c in cur.buckets}
            req, err = req + d_req, err + d_err
            bks = {b: bks.get(b, 0.0) + d_bks.get(b, 0.0) for b in bks.keys() | d_bks.keys()}
        if points and cur.timestamp <= points[-1][0]:
            points[-1] = (points[-1][0], req, err, bks)  # one instant, one value (the newest)
        else:
            points.append((cur.timestamp, req, err, bks))
        prev = cur
    return points


def _count_at(points: Sequence[_Point], times: Sequence[float], t: float) -> _Point:
    """The counters at ``t``, in whole requests.

    Reads close together (a process sampling every second) are taken as they are: what a
    read adds happened since the read before, and counts at its own time. Across a long gap
    (``GAP_S``; nobody sampled) the counters are interpolated, so the gap's traffic is spread
    over it rather than piled on the read that ends it. Before the first read nothing is known
    (its values); after the last, nothing happened. Rounding down keeps them monotonic.
    """
    i = bisect.bisect_right(times, t)
    if i == 0:
        return points[0]
    if i == len(points) or times[i] - times[i - 1] <= GAP_S:
        return points[i - 1]
    (t0, r0, e0, b0), (t1, r1, e1, b1) = points[i - 1], points[i]
    w = (t - t0) / (t1 - t0)

    def lerp(a: float, b: float) -> float:
        return float(math.floor(a + (b - a) * w + 1e-9))

    bounds = b0.keys() | b1.keys()
    return t, lerp(r0, r1), lerp(e0, e1), {b: lerp(b0.get(b, 0.0), b1.get(b, 0.0)) for b in bounds}


def frame_from_counters(
    snaps: Sequence[Snapshot], *, start: float, end: float, step: float
) -> pd.DataFrame:
    """Turn reads of cumulative counters into the metrics frame, one row per (interval, version).

    The window ``(start, end]`` is cut into intervals of ``step`` seconds ending at ``end``
    (the newest interval is whole; the oldest may begin a little before ``start``). Each
    version's reads become monotonic counters (a restart counts from zero again); what a read
    adds counts at its own time, except across a gap of more than ``GAP_S`` between reads (no
    process sampling meanwhile), whose traffic is spread over the gap rather than piled into
    one interval. The requests of all rows of
    a version add up to the counters' increase over the window. A version gets rows from its
    first read on, until its last; ``share`` is its part of each interval's requests.

    Args:
        snaps: reads of any versions, in any order; include each version's last read before
            ``start`` (see ``SampleStore.read(..., before=True)``) so the first interval counts
            from it.
        start: the window's start, epoch seconds.
        end: the window's end (now), epoch seconds.
        step: the interval length in seconds.

    Example:
        >>> inf = math.inf
        >>> snaps = [Snapshot(0, "v1", 0, 0, ((10, 0), (inf, 0))),
        ...          Snapshot(20, "v1", 40, 4, ((10, 40), (inf, 40)))]
        >>> frame_from_counters(snaps, start=0, end=20, step=10)["requests"].tolist()
        [20.0, 20.0]
    """
    if step <= 0 or end <= start:
        return empty_frame()
    # Whole steps ending at ``end`` that cover all of ``(start, end]``: rounding instead
    # cut up to half a step off the window's start, and the requests in it.
    count = max(1, math.ceil((end - start) / step - 1e-9))
    edges = [end - k * step for k in range(count, -1, -1)]
    by_version: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snaps:
        by_version[snap.version].append(snap)
    rows: list[dict[str, Any]] = []
    for series in by_version.values():
        series.sort(key=lambda s: s.timestamp)
        points = _accumulate(series)
        times = [p[0] for p in points]
        for a, b in itertools.pairwise(edges):
            if b <= times[0] or a >= times[-1]:
                continue  # the version was not read yet, or no longer
            _, r0, e0, b0 = _count_at(points, times, a)
            _, r1, e1, b1 = _count_at(points, times, b)
            requests, errors = r1 - r0, e1 - e0
            buckets = [(bound, b1[bound] - b0.get(bound, 0.0)) for bound in sorted(b1)]
            row: dict[str, Any] = {
                "timestamp": b,
                "version": series[0].version,
                "requests": requests,
                "rps": requests / (b - a),
                "errors": errors,
                "error_rate": errors / requests if requests > 0 else math.nan,
            }
            for column, q in _QUANTILES.items():
                row[column] = histogram_quantile(q, buckets)
            rows.append(row)
    return _frame_with_shares(rows)
