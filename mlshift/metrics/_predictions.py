"""Prediction counters from Prometheus: the cluster side of ``mlshift.metrics``.

Model servers on a cluster are scraped by Prometheus; ``prometheus_predictions`` asks it for
each version's ``increase()`` over a window and returns the same ``PredictionStats`` the
local engine reads from the servers' own ``/metrics`` (``mlshift._prediction_stats``).
"""

from __future__ import annotations

import json
import math
import re
import time as _time
from collections.abc import Mapping

from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidNameError
from mlshift._names import check_name
from mlshift._prediction_stats import PredictionStats, merge_stats
from mlshift.metrics._prometheus import PrometheusClient, Series, TimeLike, _epoch

__all__ = ["prometheus_predictions"]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _matchers(model: str, labels: Mapping[str, str] | None) -> str:
    """PromQL label matchers; values are quoted like JSON strings, which PromQL accepts."""
    parts = [f"model={json.dumps(model)}"]
    for name, value in (labels or {}).items():
        if not _LABEL_NAME.match(name):
            raise InvalidNameError(
                f"{name!r} is not a Prometheus label name; use letters, digits and '_',"
                " not starting with a digit"
            )
        parts.append(f"{name}={json.dumps(value)}")
    return ",".join(parts)


def prometheus_predictions(
    prometheus_url: str,
    *,
    model: str,
    since: str | float = "15m",
    end: TimeLike | None = None,
    labels: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> list[PredictionStats]:
    """Prediction counters per version over the last ``since``, from Prometheus.

    Uses ``increase()`` over the window, summed by ``version`` (and ``class``/``le``), so
    replicas add up and restarts are handled by Prometheus. ``labels`` adds equality
    matchers (e.g. ``{"namespace": "ml"}``) for scrape configs that attach them.

    Example:
        >>> prometheus_predictions("http://localhost:9090", model="churn")  # doctest: +SKIP
        [PredictionStats(version='v1', classes={'no': 812.0, 'yes': 188.0}, ...)]
    """
    check_name(model, kind="model")
    window = f"{max(1, round(parse_duration(since, what='since')))}s"
    at = _time.time() if end is None else _epoch(end)
    sel = _matchers(model, labels)
    queries = {
        "classes": (
            f"sum by (version, class) (increase(mlshift_predictions_total{{{sel}}}[{window}]))"
        ),
        "buckets": (
            f"sum by (version, le) (increase(mlshift_prediction_value_bucket{{{sel}}}[{window}]))"
        ),
        "sum": f"sum by (version) (increase(mlshift_prediction_value_sum{{{sel}}}[{window}]))",
    }
    answers: dict[str, list[Series]] = {}
    with PrometheusClient(prometheus_url, token=token, headers=headers, timeout=timeout) as prom:
        for key, promql in queries.items():
            answers[key] = prom.query(promql, time=at)
    found: list[PredictionStats] = []
    for s in answers["classes"]:
        for _, value in s.points:
            version = s.labels.get("version", "unknown")
            found.append(PredictionStats(version, classes={s.labels.get("class", ""): value}))
    for s in answers["buckets"]:
        for _, value in s.points:
            bound = float(s.labels["le"]) if "le" in s.labels else math.inf
            found.append(
                PredictionStats(s.labels.get("version", "unknown"), buckets=((bound, value),))
            )
    for s in answers["sum"]:
        for _, value in s.points:
            found.append(PredictionStats(s.labels.get("version", "unknown"), value_sum=value))
    return list(merge_stats(found).values())
