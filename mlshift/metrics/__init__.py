"""Metrics adapters: Prometheus (Istio's request metrics, prediction counters) and raw PromQL.

Owns the HTTP side of metrics: ``istio_metrics`` reads Istio's metrics into the per-version
frame, ``istio_latency_histograms`` each version's latency buckets over a window (what the
canary's latency gate tests without per-request latencies), ``prometheus_predictions`` the
model servers' prediction counters, ``query`` runs raw PromQL. The frame itself and the
prediction arithmetic are pure core (``mlshift._frame``, ``mlshift._prediction_stats``) and
are re-exported here, so every metrics name a notebook needs is ``mlshift.metrics.<name>``.

Every source ends in the same tidy frame (``FRAME_COLUMNS``), one row per (time, version);
"no data" is NaN or the empty frame, never an exception.

Example:
    >>> from mlshift.metrics import FRAME_COLUMNS
    >>> FRAME_COLUMNS[:3]
    ['timestamp', 'version', 'requests']
"""

from mlshift._frame import (
    FRAME_COLUMNS,
    Snapshot,
    empty_frame,
    frame_from_snapshots,
    histogram_quantile,
)
from mlshift._prediction_stats import (
    PredictionStats,
    parse_exposition,
    predictions_frame,
    stats_delta,
)
from mlshift.metrics._histograms import istio_latency_histograms
from mlshift.metrics._predictions import prometheus_predictions
from mlshift.metrics._prometheus import istio_metrics, query

__all__ = [
    "FRAME_COLUMNS",
    "PredictionStats",
    "Snapshot",
    "empty_frame",
    "frame_from_snapshots",
    "histogram_quantile",
    "istio_latency_histograms",
    "istio_metrics",
    "parse_exposition",
    "predictions_frame",
    "prometheus_predictions",
    "query",
    "stats_delta",
]
