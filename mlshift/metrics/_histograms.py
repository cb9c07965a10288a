"""Each version's latency histogram over a window, from Istio's buckets in Prometheus.

The canary's latency gate compares two versions' latency distributions; where the versions'
request journals cannot be read it tests their histograms instead (``mlshift._histogram``).
On a cluster those come from ``istio_request_duration_milliseconds_bucket``, reported by the
server side (or the waypoint, in ambient mode), summed over pods by version and bucket bound:
one instant query of each bucket's observed increase over the window (its last sample minus
its first: ``increase()`` would extrapolate to the window's edges, and the test would take the
inflated counts for evidence).
"""

from __future__ import annotations

import math
import time as _time
from collections import defaultdict
from collections.abc import Mapping

from mlshift._durations import parse_duration
from mlshift._histogram import LatencyHistogram
from mlshift.metrics._prometheus import (
    PrometheusClient,
    TimeLike,
    _epoch,
    istio_selector,
    observed_increase,
)

__all__ = ["istio_latency_histograms", "istio_latency_query"]


def istio_latency_query(
    service: str,
    namespace: str,
    window: float,
    *,
    reporter: str = "destination",
    version_services: bool = False,
) -> str:
    """The PromQL behind ``istio_latency_histograms``: bucket increases by version and bound.

    Example:
        >>> istio_latency_query("churn", "ml", 60.0)  # doctest: +ELLIPSIS
        'sum by (destination_version, le) (((max_over_time(istio_request_duration_millisecond...
    """
    selector = istio_selector(service, namespace, reporter, version_services=version_services)
    w = f"{max(1, round(window))}s"
    buckets = f"istio_request_duration_milliseconds_bucket{{{selector}}}"
    return f"sum by (destination_version, le) ({observed_increase(buckets, w)})"


def istio_latency_histograms(
    prometheus_url: str,
    *,
    service: str,
    namespace: str,
    since: str | float = "5m",
    end: TimeLike | None = None,
    scrape_interval: str | float = "15s",
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
    reporter: str = "destination",
    version_services: bool = False,
) -> dict[str, LatencyHistogram]:
    """Each version's request-latency histogram (ms) over the last ``since``, from Prometheus.

    Counts are what each bucket rose by within the window (at least two scrapes long, so it
    has two samples): whole observations, none extrapolated. Versions without
    observations in the window are left out; no series at all is ``{}``, not an error.

    Raises:
        MetricsUnavailableError: Prometheus cannot be reached or answered garbage.

    Example:
        >>> hists = istio_latency_histograms("http://localhost:9090", service="churn",
        ...                                  namespace="ml", since="5m")  # doctest: +SKIP
        >>> hists["v2"].quantile(0.99)  # doctest: +SKIP
        45.0
    """
    since_s = parse_duration(since, what="since")
    scrape_s = parse_duration(scrape_interval, what="scrape_interval")
    window = max(since_s, 2.0 * scrape_s)
    promql = istio_latency_query(
        service, namespace, window, reporter=reporter, version_services=version_services
    )
    at = _time.time() if end is None else _epoch(end)
    with PrometheusClient(prometheus_url, token=token, headers=headers, timeout=timeout) as prom:
        series = prom.query(promql, time=at)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in series:
        le = s.labels.get("le")
        if le is None or not s.points or math.isnan(s.points[-1][1]):
            continue
        # float() reads Prometheus's "+Inf" as inf.
        buckets[s.labels.get("destination_version", "unknown")].append((float(le), s.points[-1][1]))
    out = {v: LatencyHistogram.from_cumulative(b) for v, b in buckets.items()}
    return {v: h for v, h in out.items() if h.total > 0}
