"""Prometheus metrics of one model_server process, on their own registry, served at /metrics.

Names are a contract with mlshift's metrics readers: ``mlshift_requests_total``,
``mlshift_request_duration_seconds``, ``mlshift_batch_size``, ``mlshift_predictions_total``
(classifiers) and ``mlshift_prediction_value`` (regressors), all labelled with model and version.

With several workers the parent sets ``PROMETHEUS_MULTIPROC_DIR`` (and ``SHARED_METRICS_ENV``) to
a private directory before any worker imports prometheus_client: every worker then writes its
values to files there, and whichever worker answers /metrics sums them all (prometheus_client's
multiprocess mode), so the counts and histograms are those of the whole server. The parent's own
families (``model_server_worker_restarts_total``, ``model_server_workers``) land there too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from model_server._settings import SHARED_METRICS_ENV

__all__ = ["CONTENT_TYPE", "DEFAULT_VALUE_BUCKETS", "LATENCY_BUCKETS", "ServerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Fine enough for sub-millisecond models, wide enough for a slow one behind a queue.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Symmetric decades around zero: a regressor of unknown scale still lands in a useful bucket.
DEFAULT_VALUE_BUCKETS = (
    -1e4, -1e3, -1e2, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4,
)  # fmt: skip


class ServerMetrics:
    """The metric families of one served model version.

    Example:
        >>> m = ServerMetrics("churn", "v1", task="classification")
        >>> m.observe_request("/v2/models/{m}/infer", 200, 0.0012)
        >>> b"mlshift_requests_total" in m.render()
        True
    """

    def __init__(
        self,
        model: str,
        version: str,
        *,
        task: str = "regression",
        value_buckets: Sequence[float] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.task = task
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "mlshift_requests_total",
            "Requests by route and HTTP status.",
            ["model", "version", "route", "code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "mlshift_request_duration_seconds",
            "Time from request start to response, by route.",
            ["model", "version", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "mlshift_batch_size",
            "Rows per predict call after adaptive batching.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        self._classes = Counter(
            "mlshift_predictions_total",
            "Predicted classes (classifiers).",
            ["model", "version", "class"],
            registry=self.registry if task == "classification" else None,
        )
        buckets = sorted({float(b) for b in value_buckets}) if value_buckets else None
        # Only the family that fits the task is registered, so /metrics carries no dead series.
        self._values: Any = None
        if task != "classification":
            self._values = Histogram(
                "mlshift_prediction_value",
                "Predicted values (regressors).",
                ["model", "version"],
                buckets=buckets or DEFAULT_VALUE_BUCKETS,
                registry=self.registry,
            ).labels(model, version)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        # One view over every worker's files when the parent set a multiprocess directory.
        self._exposed = self.registry
        shared = os.environ.get(SHARED_METRICS_ENV)
        if shared:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=shared)  # type: ignore[no-untyped-call]

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        """Count one request and record its duration."""
        key = (route, code)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self._requests.labels(self.model, self.version, route, str(code)),
                self._duration.labels(self.model, self.version, route),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_batch(self, rows: int) -> None:
        """Record the number of rows of one predict call."""
        self._batch.observe(rows)

    def observe_predictions(self, predictions: Any, classes: Sequence[Any] | None = None) -> None:
        """Record predictions: class counts for classifiers, values for regressors.

        ``predictions`` is what ``predict`` returned; for ``predict_proba`` output (2-D) pass
        ``classes`` and the arg-max class is counted.
        """
        arr = np.asarray(predictions)
        if arr.ndim == 2 and classes is not None and arr.shape[1] == len(classes):
            arr = np.asarray(classes, dtype=object)[arr.argmax(axis=1)]
        if self.task == "classification":
            labels, counts = np.unique(arr.astype(str).ravel(), return_counts=True)
            for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                self._classes.labels(self.model, self.version, label).inc(count)
            return
        if self._values is not None and arr.dtype.kind in "fiub":
            for value in arr.ravel().tolist():
                self._values.observe(value)

    def render(self) -> bytes:
        """Return the text exposition of every metric."""
        return bytes(generate_latest(self._exposed))
