"""Per-version metrics as pandas DataFrames: the shared frame, Prometheus/Istio, predictions.

Every source ends in the same tidy frame (``FRAME_COLUMNS``), one row per (time, version);
"no data" is NaN or the empty frame, never an exception. ``query`` runs raw PromQL.
``predictions_frame`` summarises what each version predicts (from a server's ``/metrics``
via ``parse_exposition``, or from Prometheus via ``prometheus_predictions``).
"""

from mlshift.metrics._frame import (
    FRAME_COLUMNS,
    Snapshot,
    empty_frame,
    frame_from_snapshots,
    histogram_quantile,
)
from mlshift.metrics._predictions import (
    PredictionStats,
    parse_exposition,
    predictions_frame,
    prometheus_predictions,
    stats_delta,
)
from mlshift.metrics._prometheus import istio_metrics, query

__all__ = [
    "FRAME_COLUMNS",
    "PredictionStats",
    "Snapshot",
    "empty_frame",
    "frame_from_snapshots",
    "histogram_quantile",
    "istio_metrics",
    "parse_exposition",
    "predictions_frame",
    "prometheus_predictions",
    "query",
    "stats_delta",
]
