"""Reading Prometheus over its HTTP API: a small client, raw PromQL to a tidy frame, Istio metrics.

Prometheus is the metrics source on a cluster: Istio's sidecars export
``istio_requests_total`` and ``istio_request_duration_milliseconds``, and Prometheus scrapes
them. This module needs nothing but Prometheus's HTTP API (``/api/v1/query`` and
``/api/v1/query_range``), so metrics work with no Kubernetes API reachable.

Every failure to get an answer (connection refused, timeout, refused credentials, a body
that is not a Prometheus API response, a rejected query) is a ``MetricsUnavailableError``
naming the URL. An answer with no series is not an error: it is the empty frame.
"""

from __future__ import annotations

import logging
import math
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pandas as pd

from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidArgumentError, MetricsUnavailableError
from mlshift._frame import empty_frame, normalize_frame
from mlshift._names import check_name

__all__ = [
    "PrometheusClient",
    "Series",
    "istio_metrics",
    "istio_queries",
    "istio_selector",
    "observed_increase",
    "query",
    "rate_window",
]

log = logging.getLogger("mlshift.metrics")

TimeLike = float | int | datetime | pd.Timestamp
_MAX_POINTS = 240  # default resolution of a range query when no step is given
SOURCE_REPORTERS = "source|waypoint"
# Envoy's response flags of answers a proxy made without the upstream's: UH no healthy
# upstream, UF connection failure, UO overflow (circuit breaker), NR no route, UT timeout,
# UC upstream connection termination (alone or with others, e.g. "UF,URX").
MESH_FLAGS = ".*(UH|UF|UO|NR|UT|UC).*"


@dataclass(frozen=True)
class Series:
    """One series of a Prometheus answer: its labels and its ``(epoch seconds, value)`` points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def _epoch(value: TimeLike) -> float:
    """Epoch seconds from seconds, a datetime (naive means UTC) or a pandas Timestamp."""
    if isinstance(value, datetime):  # pd.Timestamp is a datetime too
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        return ts.timestamp()
    return float(value)


class PrometheusClient:
    """A synchronous client for Prometheus's query API.

    Args:
        url: Prometheus's base URL, e.g. ``http://prometheus.istio-system:9090``.
        token: a bearer token, sent as ``Authorization: Bearer ...``.
        headers: extra headers (a proxy's auth header, ``X-Scope-OrgID`` for Mimir...).
        timeout: seconds for connecting and for each answer.
        transport: an ``httpx`` transport, for tests and unusual networks.

    Example:
        >>> with PrometheusClient("http://127.0.0.1:9090") as prom:  # doctest: +SKIP
        ...     series = prom.query("up")
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, headers=all_headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"<PrometheusClient {self.url}>"

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def query(self, promql: str, *, time: TimeLike | None = None) -> list[Series]:
        """Evaluate ``promql`` at one instant (default: now); a scalar is one unlabelled series."""
        params: dict[str, str] = {"query": promql}
        if time is not None:
            params["time"] = repr(_epoch(time))
        return self._call("/api/v1/query", params, promql)

    def query_range(
        self, promql: str, *, start: TimeLike, end: TimeLike, step: float
    ) -> list[Series]:
        """Evaluate ``promql`` at ``start``, ``start + step``, ... up to ``end``."""
        params = {
            "query": promql,
            "start": repr(_epoch(start)),
            "end": repr(_epoch(end)),
            "step": repr(float(step)),
        }
        return self._call("/api/v1/query_range", params, promql)

    def _call(self, path: str, params: dict[str, str], promql: str) -> list[Series]:
        where = f"Prometheus at {self.url}"
        try:
            # POST keeps long PromQL out of URLs that proxies might truncate.
            response = self._http.post(path, data=params)
        except httpx.TimeoutException as exc:
            raise MetricsUnavailableError(
                f"{where} did not answer in time ({type(exc).__name__}); check that it is up"
                " and reachable from here, or pass a larger timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise MetricsUnavailableError(
                f"{where} cannot be reached ({exc}); check prometheus_url and that Prometheus"
                " runs (in a cluster: kubectl -n istio-system port-forward svc/prometheus 9090)"
            ) from exc
        if response.status_code in (401, 403):
            raise MetricsUnavailableError(
                f"{where} refused the request (HTTP {response.status_code}); pass token= or"
                " headers= with credentials it accepts"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise MetricsUnavailableError(
                f"{where} answered HTTP {response.status_code} with a body that is not JSON"
                f" ({response.text[:80]!r}); check that prometheus_url points at Prometheus"
                " itself, not at a UI or a login page"
            ) from exc
        if isinstance(body, dict) and body.get("status") == "error":
            raise MetricsUnavailableError(
                f"{where} rejected the query {promql!r}: {body.get('errorType', '')}"
                f" {body.get('error', '')}; fix the PromQL or the time range"
            )
        try:
            return _parse_result(body["data"], where=where)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MetricsUnavailableError(
                f"{where} answered HTTP {response.status_code} with JSON that is not a"
                f" Prometheus query result ({type(exc).__name__}: {exc}); check that"
                " prometheus_url points at Prometheus's HTTP API"
            ) from exc


def _parse_result(data: Any, *, where: str = "Prometheus") -> list[Series]:
    """Series from the ``data`` member of a query answer; raises on anything malformed.

    A result type other than scalar, vector or matrix (``string``, or garbage) is
    ``MetricsUnavailableError``: mlshift's queries never ask for one. Other malformed parts
    raise ``KeyError``/``TypeError``/``ValueError``/``IndexError``, wrapped by the caller.
    """
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return [Series({}, [(float(result[0]), float(result[1]))])]
    if kind == "vector":
        return [
            Series(dict(item["metric"]), [(float(item["value"][0]), float(item["value"][1]))])
            for item in result
        ]
    if kind == "matrix":
        return [
            Series(dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
            for item in result
        ]
    raise MetricsUnavailableError(
        f"{where} answered a result of type {kind!r}, not a vector, matrix or scalar; check"
        " that prometheus_url points at Prometheus's HTTP API and that the query is PromQL"
        " returning numbers"
    )


def _tidy(series: list[Series]) -> pd.DataFrame:
    """A long frame: timestamp, value, then one column per label (sorted)."""
    labels = sorted({name for s in series for name in s.labels})
    renamed = {name: f"label_{name}" if name in ("timestamp", "value") else name for name in labels}
    rows = [
        {"timestamp": t, "value": v, **{renamed[k]: val for k, val in s.labels.items()}}
        for s in series
        for t, v in s.points
    ]
    df = pd.DataFrame(rows, columns=["timestamp", "value", *renamed.values()])
    df["timestamp"] = pd.to_datetime(df["timestamp"].astype("float64"), unit="s", utc=True)
    df["timestamp"] = df["timestamp"].astype("datetime64[ns, UTC]")
    df["value"] = df["value"].astype("float64")
    return df


def _auto_step(span: float) -> float:
    return float(max(1, math.ceil(span / _MAX_POINTS)))


def query(
    promql: str,
    *,
    prometheus_url: str,
    since: str | float | None = None,
    step: str | float | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> pd.DataFrame:
    """Run raw PromQL and return a tidy frame: ``timestamp``, ``value``, one column per label.

    With ``since`` or ``start`` it is a range query (``end`` defaults to now, ``step`` to about
    240 points); otherwise an instant query at ``end`` (default now). A label named
    ``timestamp`` or ``value`` becomes ``label_timestamp`` / ``label_value``.

    Raises:
        MetricsUnavailableError: Prometheus cannot be reached, refused the query, or answered
            something else than its API's JSON.

    Example:
        >>> mlshift.metrics.query(  # doctest: +SKIP
        ...     'sum by (destination_version) (rate(istio_requests_total[1m]))',
        ...     prometheus_url="http://localhost:9090", since="10m")
    """
    end_s = _time.time() if end is None else _epoch(end)
    with PrometheusClient(prometheus_url, token=token, headers=headers, timeout=timeout) as prom:
        if since is None and start is None:
            return _tidy(prom.query(promql, time=end_s))
        start_s = _epoch(start) if start is not None else end_s - parse_duration(since or 0)
        if start_s > end_s:
            raise InvalidArgumentError(f"start ({start_s}) is after end ({end_s}); swap them")
        span = end_s - start_s
        step_s = parse_duration(step, what="step") if step is not None else _auto_step(span)
        return _tidy(prom.query_range(promql, start=start_s, end=end_s, step=step_s))


def rate_window(step: float, scrape_interval: float) -> float:
    """The ``rate()`` window for a range query: ``max(step + scrape, 4 × scrape)`` seconds.

    This is Grafana's ``$__rate_interval``: at least four scrapes, so one missed scrape still
    leaves enough samples for a rate, and at least one step plus a scrape, so consecutive
    points' windows overlap and no request falls between them.

    Example:
        >>> rate_window(15.0, 15.0)
        60.0
    """
    return max(step + scrape_interval, 4.0 * scrape_interval)


def istio_selector(
    service: str, namespace: str, reporter: str = "destination", *, version_services: bool = False
) -> str:
    """The label matchers of one service's requests as one side reports them (checked names).

    Example:
        >>> istio_selector("churn", "ml")
        'reporter="destination",destination_service_name="churn",destination_service_namespace="ml"'
    """
    check_name(service, kind="service")
    check_name(namespace, kind="namespace")
    if reporter not in ("destination", "waypoint"):
        raise InvalidArgumentError(
            f"reporter must be 'destination' or 'waypoint', got {reporter!r}"
        )
    name = f'=~"{service}|{service}-.+"' if version_services else f'="{service}"'
    return (
        f'reporter="{reporter}",destination_service_name{name},'
        f'destination_service_namespace="{namespace}"'
    )


def observed_increase(counter: str, window: str) -> str:
    """PromQL for how much each series of ``counter`` rose within ``window``: its last sample
    minus its first, with no extrapolation to the window's edges (``increase()`` for a
    series that restarted from zero meanwhile).

    Example:
        >>> observed_increase("c", "60s")  # doctest: +ELLIPSIS
        '((max_over_time(c[60s]) - min_over_time(c[60s])) unless (resets(c[60s]) > 0)) or ...'
    """
    span = f"{counter}[{window}]"
    return (
        f"((max_over_time({span}) - min_over_time({span})) unless (resets({span}) > 0))"
        f" or increase({span})"
    )


def istio_queries(
    service: str,
    namespace: str,
    window: float,
    *,
    reporter: str = "destination",
    version_services: bool = False,
    observed: bool = False,
) -> dict[str, str]:
    """The PromQL behind ``istio_metrics``, keyed by the frame column each one fills.

    ``observed``: counts are what the counters really rose by between the window's first and
    last samples (``observed_increase``) per second of window, not ``rate()``, which
    extrapolates to the window's edges: a canary's look tests counts, and extrapolated ones
    (about 4/3 too many over four scrapes) make every test overconfident.

    Only ``reporter="destination"`` is read for the version's own numbers: Istio reports each
    request twice, once by the client's sidecar (``source``) and once by the server's, and
    summing both doubles counts. ``mesh_errors`` comes from the other side (``source``, which
    includes gateways, or ``waypoint``): 5xx a proxy made itself (``MESH_FLAGS``), which the
    version never saw; ``seen`` is that side's traffic, to tell "none" from "not measured".
    In ambient mode L7 metrics come from the waypoint only (``reporter="waypoint"``). With
    Gateway API routing (``version_services``) requests reach the version Services
    ``<service>-<version>``, so those are read as well.

    Example:
        >>> istio_queries("churn", "ml", 60.0)["rps"]  # doctest: +ELLIPSIS
        'sum by (destination_version) (rate(istio_requests_total{reporter="destination",...
    """
    selector = istio_selector(service, namespace, reporter, version_services=version_services)
    name = f'=~"{service}|{service}-.+"' if version_services else f'="{service}"'
    w = f"{max(1, round(window))}s"
    requests = f"istio_requests_total{{{selector}}}"
    errors = f'istio_requests_total{{{selector},response_code=~"5.."}}'
    buckets = f"istio_request_duration_milliseconds_bucket{{{selector}}}"
    # What callers' and gateways' proxies saw (waypoints in ambient mode), for the failures
    # the mesh makes itself: only those flags, so a model's own 5xx (flags "-", or URX
    # alone after retries) is not counted twice.
    # In ambient mode the waypoint already gives the version's own numbers: only callers'
    # proxies are the other side then.
    others = "source" if reporter == "waypoint" else SOURCE_REPORTERS
    seen = (
        f'reporter=~"{others}",destination_service_name{name},'
        f'destination_service_namespace="{namespace}"'
    )
    mesh = f'istio_requests_total{{{seen},response_code=~"5..",response_flags=~"{MESH_FLAGS}"}}'

    def per_second(counter: str) -> str:
        if observed:
            return f"sum by (destination_version) ({observed_increase(counter, w)}) / {w[:-1]}"
        return f"sum by (destination_version) (rate({counter}[{w}]))"

    out = {
        "rps": per_second(requests),
        "errors": per_second(errors),
        "seen": per_second(f"istio_requests_total{{{seen}}}"),
        "mesh_errors": per_second(mesh),
    }
    for column, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        out[column] = (
            f"histogram_quantile({q}, sum by (destination_version, le) (rate({buckets}[{w}])))"
        )
    return out


def istio_metrics(
    prometheus_url: str,
    *,
    service: str,
    namespace: str,
    since: str | float = "15m",
    step: str | float = "15s",
    end: TimeLike | None = None,
    scrape_interval: str | float = "15s",
    window: str | float | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
    reporter: str = "destination",
    version_services: bool = False,
) -> pd.DataFrame:
    """Per-version traffic, errors and latency of one Istio service, as the metrics frame.

    Reads ``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket`` with
    ``reporter="destination"``, grouped by ``destination_version``, at every ``step`` over the
    last ``since``. ``rps`` is ``rate()`` over ``window`` (default ``rate_window(step,
    scrape_interval)``); ``requests`` and ``errors`` are the rates times ``step`` (requests
    per step); ``errors`` are 5xx responses; ``p50_ms``/``p95_ms``/``p99_ms`` come from
    ``histogram_quantile``; ``share`` is the version's part of the service's rps.

    No data is not an error: the empty frame when the service has no series in the range;
    a version whose counters exist but saw no requests has ``rps`` 0 and NaN rates/latencies.

    Args:
        prometheus_url: e.g. Istio's addon, ``http://prometheus.istio-system:9090``.
        service: the Kubernetes Service (the endpoint name).
        namespace: its namespace.
        since: how far back, e.g. ``"15m"``.
        step: the resolution, e.g. ``"15s"``; the end is aligned down to a multiple of it.
            A step as long as ``since`` (or longer) gives one row per version over exactly
            the last ``since``, ending at ``end`` or now: what the canary reads at each look.
        end: the last instant (default now).
        scrape_interval: Prometheus's scrape interval for these metrics (Istio's addon: 15s).
        window: override the ``rate()`` window.
        headers: extra HTTP headers; token: a bearer token; timeout: seconds per request.
        reporter: ``"waypoint"`` in Istio's ambient mode, else ``"destination"``.
        version_services: also read the version Services ``<service>-<version>`` (Gateway
            API routing sends requests there).

    Raises:
        MetricsUnavailableError: Prometheus cannot be reached or answered garbage.
        InvalidNameError: ``service`` or ``namespace`` is not a DNS-1123 label.

    Example:
        >>> df = istio_metrics("http://localhost:9090", service="churn",  # doctest: +SKIP
        ...                    namespace="ml", since="30m")
        >>> df.pivot(index="timestamp", columns="version", values="share")  # doctest: +SKIP
    """
    step_s = parse_duration(step, what="step")
    if step_s <= 0:
        raise InvalidArgumentError(f"step must be positive, got {step!r}; use e.g. '15s'")
    since_s = parse_duration(since, what="since")
    scrape_s = parse_duration(scrape_interval, what="scrape_interval")
    whole = step_s >= since_s
    if window is not None:
        window_s = parse_duration(window, what="window")
    elif whole:
        # One row over the whole window (a canary's look): exactly ``since``, but at least
        # two scrapes, or rate() has a single sample.
        window_s = max(since_s, 2.0 * scrape_s)
    else:
        window_s = rate_window(step_s, scrape_s)
    queries = istio_queries(
        service,
        namespace,
        window_s,
        reporter=reporter,
        version_services=version_services,
        observed=whole,
    )
    answers: dict[str, list[Series]] = {}
    with PrometheusClient(prometheus_url, token=token, headers=headers, timeout=timeout) as prom:
        if whole:
            # Not a range: its two end points would both be read, the first over the time
            # before the window; and not aligned down to the step, which would drop up to a
            # whole window of the newest requests.
            at = _epoch(end) if end is not None else _time.time()
            for column, promql in queries.items():
                answers[column] = prom.query(promql, time=at)
            log.debug("istio_metrics %s.%s over %gs at %s", service, namespace, since_s, at)
            return _istio_frame(answers, since_s)
        end_s = _epoch(end) if end is not None else math.floor(_time.time() / step_s) * step_s
        for column, promql in queries.items():
            answers[column] = prom.query_range(
                promql, start=end_s - since_s, end=end_s, step=step_s
            )
    log.debug("istio_metrics %s.%s: %d rps series", service, namespace, len(answers["rps"]))
    return _istio_frame(answers, step_s)


def _istio_frame(answers: dict[str, list[Series]], step: float) -> pd.DataFrame:
    """Join the per-column answers on (timestamp, version) into the metrics frame."""
    values: dict[str, dict[tuple[float, str], float]] = {}
    for column, series in answers.items():
        values[column] = {
            (t, s.labels.get("destination_version", "unknown")): v
            for s in series
            for t, v in s.points
        }
    if not values["rps"]:
        return empty_frame()
    totals: dict[float, float] = {}
    for (t, _), rps in values["rps"].items():
        totals[t] = totals.get(t, 0.0) + rps
    rows = []
    for key, rps in values["rps"].items():
        # No 5xx series for a version means it never answered 5xx: zero, not unknown.
        err = values["errors"].get(key, 0.0)
        total = totals[key[0]]
        # Mesh errors are known only where callers report (sidecars, gateways): else NaN.
        known = key in values["seen"] or key in values["mesh_errors"]
        mesh = values["mesh_errors"].get(key, 0.0) if known else math.nan
        rows.append(
            {
                "timestamp": key[0],
                "version": key[1],
                "requests": rps * step,
                "rps": rps,
                "errors": err * step,
                "error_rate": err / rps if rps > 0 else math.nan,
                "p50_ms": values["p50_ms"].get(key, math.nan),
                "p95_ms": values["p95_ms"].get(key, math.nan),
                "p99_ms": values["p99_ms"].get(key, math.nan),
                "share": rps / total if total > 0 else math.nan,
                "mesh_errors": mesh * step,
            }
        )
    # Mesh errors of no version the service reported (a 503 "no healthy upstream" happens
    # before any pod is picked: Istio labels it destination_version="unknown") get a row of
    # their own, so they are seen rather than dropped.
    for key, mesh in values["mesh_errors"].items():
        if key not in values["rps"] and mesh > 0:
            rows.append({"timestamp": key[0], "version": key[1], "mesh_errors": mesh * step})
    return normalize_frame(rows)
