"""Canary gates, for ``ep.canary(..., gates=[...])``: relative, absolute, and your own.

Example:
    >>> from mlshift import gates
    >>> [g.name for g in (gates.ErrorRate(0.005), gates.Latency(0.2), gates.SampleRatio())]
    ['error-rate', 'latency', 'sample-ratio']

Write your own: any object with a ``name`` and ``check(interval) -> Verdict`` is a gate (see
``Gate``); ``interval.totals(version)``, ``interval.quantile(version)``, ``interval.frame``
and ``interval.latencies`` hold what the current step has seen. Prediction gates:
``PredictionDrift`` (the canary's predictions against stable's) and ``Agreement`` (paired
answers to mirrored requests, with ``ep.shadow``). Where per-request latencies cannot be read,
``interval.histograms`` holds each version's ``LatencyHistogram`` over the step instead.
"""

from mlshift._canary_plan import canary_plan
from mlshift._gates import (
    ErrorRate,
    Gate,
    Interval,
    Latency,
    MaxErrorRate,
    MaxLatency,
    SampleRatio,
    Status,
    Verdict,
    default_gates,
    judge,
)
from mlshift._histogram import LatencyHistogram
from mlshift._prediction_gates import Agreement, PredictionDrift

__all__ = [
    "Agreement",
    "ErrorRate",
    "Gate",
    "Interval",
    "Latency",
    "LatencyHistogram",
    "MaxErrorRate",
    "MaxLatency",
    "PredictionDrift",
    "SampleRatio",
    "Status",
    "Verdict",
    "canary_plan",
    "default_gates",
    "judge",
]
