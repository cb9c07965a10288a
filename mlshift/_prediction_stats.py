"""What each version predicts: class counts or value histograms, and how far it drifts from stable.

Pure code, no I/O: the values and arithmetic every reader of prediction counters shares.
Every model server exports ``mlshift_predictions_total{model,version,class}`` (classifiers)
or the histogram ``mlshift_prediction_value{model,version}`` (regressors) on ``/metrics``.
The local engine reads them from that text exposition (``parse_exposition``), the Kubernetes
target from Prometheus (``mlshift.metrics.prometheus_predictions``); both end in
``PredictionStats`` per version, which ``predictions_frame`` shapes into a frame:

- classifiers: one row per (version, class) with ``count``, ``share`` and ``divergence``;
- regressors: one row per version with ``count``, ``p10``, ``p50``, ``p90``, ``mean`` and
  ``divergence``.

``divergence`` is a column (the same value on every row of a version) so one frame carries
everything a plot or a gate needs; it compares each version with the stable one: the total
variation distance of class shares (0 = same shares, 1 = disjoint) for classifiers, the
population stability index over the histogram buckets for regressors (< 0.1 is usually read
as no shift, > 0.25 as a major one). The stable version itself has 0; NaN means one of the
two has no predictions in the window.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from mlshift._exceptions import MetricsUnavailableError
from mlshift._frame import histogram_quantile

__all__ = [
    "CLASSIFIER_COLUMNS",
    "REGRESSOR_COLUMNS",
    "PredictionStats",
    "merge_stats",
    "parse_exposition",
    "predictions_frame",
    "psi",
    "stats_delta",
    "total_variation",
]

CLASSIFIER_COLUMNS = ["version", "class", "count", "share", "divergence"]
REGRESSOR_COLUMNS = ["version", "count", "p10", "p50", "p90", "mean", "divergence"]
_PSI_EPSILON = 1e-4  # floor for an empty bucket's share, so PSI stays finite


@dataclass(frozen=True)
class PredictionStats:
    """Prediction counters of one version (cumulative, or over a window after ``stats_delta``).

    Attributes:
        version: the version name.
        classes: class label -> predictions of that class (classifiers).
        buckets: ``(upper bound, cumulative count)`` of predicted values, incl. ``+inf``.
        value_sum: the sum of predicted values (regressors).

    Example:
        >>> PredictionStats("v1", classes={"yes": 3, "no": 1}).count
        4.0
    """

    version: str
    classes: Mapping[str, float] = field(default_factory=dict)
    buckets: tuple[tuple[float, float], ...] = ()
    value_sum: float = 0.0

    @property
    def count(self) -> float:
        """Predictions counted: the sum over classes, or the histogram's ``+inf`` bucket."""
        if self.classes:
            return float(sum(self.classes.values()))
        return float(dict(self.buckets).get(math.inf, 0.0))


def merge_stats(stats: Iterable[PredictionStats]) -> dict[str, PredictionStats]:
    """Sum the stats of each version (several replicas, or several label sets)."""
    classes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    order: list[str] = []
    for s in stats:
        if s.version not in sums:
            order.append(s.version)
        sums[s.version] += s.value_sum
        for name, n in s.classes.items():
            classes[s.version][name] += n
        for bound, n in s.buckets:
            buckets[s.version][bound] += n
    return {
        v: PredictionStats(
            v,
            dict(classes[v]),
            tuple(sorted(buckets[v].items())),
            sums[v],
        )
        for v in order
    }


def parse_exposition(text: str, *, model: str | None = None) -> list[PredictionStats]:
    """Read prediction counters from a Prometheus text exposition (a server's ``/metrics``).

    Args:
        text: the exposition, as served by ``model_server`` (or several concatenated).
        model: keep only series of this model; all models when None.

    Returns:
        One ``PredictionStats`` per version found, in order of appearance.

    Raises:
        MetricsUnavailableError: the text is not a Prometheus exposition.

    Example:
        >>> text = 'mlshift_predictions_total{model="churn",version="v1",class="yes"} 3\\n'
        >>> parse_exposition(text)[0].classes
        {'yes': 3.0}
    """
    from prometheus_client.parser import text_string_to_metric_families

    # Only mlshift's prediction series (and their # TYPE/# HELP lines) go to the parser: a
    # server's /metrics holds a few hundred other samples, and parsing them all costs tens
    # of milliseconds of the notebook's CPU every few seconds (the sampler thread's).
    ours = "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("mlshift_prediction")
        or (line.startswith("#") and " mlshift_prediction" in line)
    )
    found: list[PredictionStats] = []
    try:
        for family in text_string_to_metric_families(ours + "\n" if ours else ""):
            for sample in family.samples:
                labels = sample.labels
                if model is not None and labels.get("model") != model:
                    continue
                version = labels.get("version", "unknown")
                value = float(sample.value)
                if sample.name == "mlshift_predictions_total":
                    found.append(PredictionStats(version, classes={labels.get("class", ""): value}))
                elif sample.name == "mlshift_prediction_value_bucket":
                    bound = float(labels["le"])
                    found.append(PredictionStats(version, buckets=((bound, value),)))
                elif sample.name == "mlshift_prediction_value_sum":
                    found.append(PredictionStats(version, value_sum=value))
    except (ValueError, KeyError, TypeError) as exc:
        raise MetricsUnavailableError(
            f"the metrics text is not a Prometheus exposition ({exc}); check that it comes from"
            " a model server's /metrics"
        ) from exc
    return list(merge_stats(found).values())


def stats_delta(later: PredictionStats, earlier: PredictionStats) -> PredictionStats:
    """What happened between two cumulative reads of one version (a window).

    A counter that went down means the server restarted; the later values are then the
    window's counts, as PromQL's ``increase()`` would take them.

    Example:
        >>> a, b = PredictionStats("v1", {"yes": 2}), PredictionStats("v1", {"yes": 5})
        >>> stats_delta(b, a).classes
        {'yes': 3.0}
    """
    before_classes, before_buckets = dict(earlier.classes), dict(earlier.buckets)
    reset = any(n < before_classes.get(c, 0.0) for c, n in later.classes.items()) or any(
        n < before_buckets.get(b, 0.0) for b, n in later.buckets
    )
    if reset:
        return later
    return PredictionStats(
        later.version,
        {c: float(n - before_classes.get(c, 0.0)) for c, n in later.classes.items()},
        tuple((b, n - before_buckets.get(b, 0.0)) for b, n in later.buckets),
        later.value_sum - earlier.value_sum,
    )


def _shares(classes: Mapping[str, float]) -> dict[str, float]:
    total = sum(classes.values())
    return {c: n / total for c, n in classes.items()} if total > 0 else {}


def total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Total variation distance between two class-count maps; NaN if either is empty.

    Example:
        >>> total_variation({"yes": 1, "no": 1}, {"yes": 3, "no": 1})
        0.25
    """
    pa, pb = _shares(a), _shares(b)
    if not pa or not pb:
        return math.nan
    return 0.5 * sum(abs(pa.get(c, 0.0) - pb.get(c, 0.0)) for c in set(pa) | set(pb))


def _cumulative_at(buckets: Mapping[float, float], bound: float) -> float:
    """Cumulative count at ``bound``: the one of the highest bucket not above it."""
    below = [n for b, n in buckets.items() if b <= bound]
    return max(below) if below else 0.0


def psi(a: Iterable[tuple[float, float]], b: Iterable[tuple[float, float]]) -> float:
    """Population stability index of histogram ``b`` against ``a`` (cumulative buckets).

    Each bucket's share is floored at 1e-4 so an empty bucket does not make it infinite.
    NaN when either histogram has no observations.

    Example:
        >>> inf = math.inf
        >>> psi([(0.0, 50), (inf, 100)], [(0.0, 50), (inf, 100)])
        0.0
    """
    ca, cb = dict(a), dict(b)
    bounds = sorted(set(ca) | set(cb))
    ta, tb = _cumulative_at(ca, math.inf), _cumulative_at(cb, math.inf)
    if not ta > 0 or not tb > 0:
        return math.nan
    score, prev_a, prev_b = 0.0, 0.0, 0.0
    for bound in bounds:
        na, nb = _cumulative_at(ca, bound), _cumulative_at(cb, bound)
        pa = max((na - prev_a) / ta, _PSI_EPSILON)
        pb = max((nb - prev_b) / tb, _PSI_EPSILON)
        score += (pb - pa) * math.log(pb / pa)
        prev_a, prev_b = na, nb
    return score


def predictions_frame(
    stats: Iterable[PredictionStats],
    *,
    stable: str | None = None,
    kind: Literal["auto", "classification", "regression"] = "auto",
) -> pd.DataFrame:
    """Per-version prediction summary with a divergence score against the stable version.

    Args:
        stats: counters per version over the window (same-version entries are summed).
        stable: the version to compare with; by default the one with the most predictions.
        kind: ``"auto"`` picks classification when any version has class counts.

    Returns:
        ``CLASSIFIER_COLUMNS`` or ``REGRESSOR_COLUMNS`` (see the module docstring); ``attrs``
        holds ``kind``, ``divergence`` (``"tvd"`` or ``"psi"``) and ``stable``. With no data,
        an empty frame with the columns of ``kind`` (classifier columns for ``"auto"``).

    Example:
        >>> df = predictions_frame([PredictionStats("v1", {"yes": 1, "no": 3}),
        ...                         PredictionStats("v2", {"yes": 2, "no": 2})], stable="v1")
        >>> df.groupby("version").divergence.first().tolist()
        [0.0, 0.25]
    """
    merged = merge_stats(stats)
    if kind == "auto":
        has_classes = any(s.classes for s in merged.values())
        has_buckets = any(s.buckets for s in merged.values())
        kind = "regression" if has_buckets and not has_classes else "classification"
    if stable is None and merged:
        stable = max(merged.values(), key=lambda s: (s.count, s.version)).version
    base = merged.get(stable) if stable is not None else None
    rows: list[dict[str, Any]] = []
    if kind == "classification":
        columns = CLASSIFIER_COLUMNS
        for v in sorted(merged):
            s = merged[v]
            shares = _shares(s.classes)
            score = total_variation(s.classes, base.classes) if base else math.nan
            for c in sorted(s.classes):
                rows.append(
                    {
                        "version": v,
                        "class": c,
                        "count": float(s.classes[c]),
                        "share": shares.get(c, math.nan),
                        "divergence": score,
                    }
                )
    else:
        columns = REGRESSOR_COLUMNS
        for v in sorted(merged):
            s = merged[v]
            n = s.count
            rows.append(
                {
                    "version": v,
                    "count": n,
                    "p10": histogram_quantile(0.1, s.buckets),
                    "p50": histogram_quantile(0.5, s.buckets),
                    "p90": histogram_quantile(0.9, s.buckets),
                    "mean": s.value_sum / n if n > 0 else math.nan,
                    "divergence": psi(base.buckets, s.buckets) if base else math.nan,
                }
            )
    df = pd.DataFrame(rows, columns=columns)
    df["version"] = df["version"].astype("str")
    if "class" in df:
        df["class"] = df["class"].astype("str")
    for col in columns:
        if col not in ("version", "class"):
            df[col] = df[col].astype("float64")
    df.attrs.update(
        kind=kind, divergence="tvd" if kind == "classification" else "psi", stable=stable
    )
    return df
