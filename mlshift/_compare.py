"""Paired comparison of two versions' answers to the same requests (shadow traffic).

Pure code, no I/O. model_server journals every inference request with Envoy's
``x-request-id`` (which a mirrored copy keeps); ``journal_frame`` turns a version's journal
into a frame, one row per predicted value, and ``compare`` joins two of them on request id
(and the row's position in the request): both predictions side by side, whether they agree,
the absolute difference for numbers, and a summary — agreement with a Wilson interval, a
confusion matrix for classes, mean and 95th-percentile difference for regressors.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlshift._stats_tests import wilson

__all__ = ["Comparison", "compare", "journal_frame"]

_JOURNAL_COLUMNS = ["time", "id", "row", "status", "latency_ms", "digest", "prediction"]


def journal_frame(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A version's journal as a frame: one row per predicted value of each request.

    Example:
        >>> journal_frame([{"id": "a", "time": 0.0, "status": 200, "latency_ms": 3.0,
        ...                 "digest": "d", "prediction": [1, 0]}])["prediction"].tolist()
        [1, 0]
    """
    rows: list[dict[str, Any]] = []
    for e in entries:
        values = e.get("prediction")
        values = values if isinstance(values, list) and values else [None]
        for i, value in enumerate(values):
            rows.append(
                {
                    "time": float(e.get("time", math.nan)),
                    "id": str(e.get("id") or ""),
                    "row": i,
                    "status": int(e.get("status", 0)),
                    "latency_ms": float(e.get("latency_ms", math.nan)),
                    "digest": str(e.get("digest") or ""),
                    "prediction": value,
                }
            )
    frame = pd.DataFrame(rows, columns=_JOURNAL_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"].astype("float64"), unit="s", utc=True)
    frame["latency_ms"] = frame["latency_ms"].astype("float64")
    return frame


@dataclass
class Comparison:
    """Two versions' answers to the same requests, and how often they agree.

    ``frame``: one row per paired prediction (``time, id, row, <a>, <b>, agree``, and
    ``abs_diff`` for numeric predictions); ``summary``: ``pairs``, ``agreement`` with its 95 %
    Wilson interval ``agreement_low``/``agreement_high``, and for numbers ``mean_abs_diff``,
    ``p95_abs_diff``; ``confusion``: counts of (a's answer, b's answer) for classes.

    Example:
        >>> cmp = ep.compare("v1", "v2", since="10m")  # doctest: +SKIP
        >>> cmp.summary["agreement"], cmp.confusion  # doctest: +SKIP
    """

    a: str
    b: str
    frame: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)
    confusion: pd.DataFrame | None = None

    def __repr__(self) -> str:
        s = self.summary
        if not s.get("pairs"):
            return f"<Comparison {self.a} vs {self.b}: no paired requests>"
        return (
            f"<Comparison {self.a} vs {self.b}: {s['pairs']:.0f} pairs, agreement"
            f" {s['agreement']:.1%} [{s['agreement_low']:.1%}, {s['agreement_high']:.1%}]>"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in self.summary.items()
        )
        extra = "" if self.confusion is None else self.confusion.to_html()
        return f"<div><b>{html.escape(repr(self))}</b><table>{rows}</table>{extra}</div>"

    def over_time(self, step: str = "1min") -> pd.DataFrame:
        """Agreement per time bucket: ``time, pairs, agreement``.

        Example:
            >>> cmp.over_time("30s")  # doctest: +SKIP
        """
        if self.frame.empty:
            return pd.DataFrame({"time": [], "pairs": [], "agreement": []})
        grouped = self.frame.set_index("time")["agree"].astype(float).resample(step)
        out = pd.DataFrame({"pairs": grouped.count(), "agreement": grouped.mean()})
        return out.reset_index()


def _label(value: Any) -> str:
    """A prediction as a class label: 1, 1.0 and True are all ``"1"``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_number(values: pd.Series) -> bool:
    return bool(len(values)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def compare(
    a: str,
    journal_a: pd.DataFrame,
    b: str,
    journal_b: pd.DataFrame,
    *,
    rtol: float = 1e-6,
    classes: bool | None = None,
) -> Comparison:
    """Join two journals on request id and row; both answers, agreement, differences.

    Requests without an id (sent around the router) and failed ones are left out. Numeric
    predictions agree within ``rtol`` (relative); ``classes`` (default: both sides hold only
    integers or strings) treats predictions as labels and adds a confusion matrix.

    Example:
        >>> ja = journal_frame([{"id": "r1", "time": 1.0, "status": 200, "prediction": [1]}])
        >>> jb = journal_frame([{"id": "r1", "time": 1.0, "status": 200, "prediction": [0]}])
        >>> compare("v1", ja, "v2", jb).summary["agreement"]
        0.0
    """

    def usable(j: pd.DataFrame) -> pd.DataFrame:
        j = j[(j["id"] != "") & (j["status"] == 200)]
        return j.drop_duplicates(["id", "row"], keep="last")

    left = usable(journal_a)[["time", "id", "row", "digest", "prediction"]]
    right = usable(journal_b)[["id", "row", "digest", "prediction"]]
    joined = left.merge(right, on=["id", "row"], suffixes=("_a", "_b"))
    joined = joined.rename(columns={"prediction_a": a, "prediction_b": b})
    frame = joined[["time", "id", "row", a, b]].copy()
    numeric = _is_number(frame[a]) and _is_number(frame[b])
    if classes is None:
        classes = not numeric or all(float(v).is_integer() for v in pd.concat([frame[a], frame[b]]))
    summary: dict[str, float] = {"pairs": float(len(frame))}
    confusion = None
    if numeric and not classes:
        x, y = frame[a].to_numpy(dtype=float), frame[b].to_numpy(dtype=float)
        diff = np.abs(x - y)
        frame["agree"] = diff <= rtol * np.maximum(np.abs(x), np.abs(y))
        frame["abs_diff"] = diff
        if len(diff):
            summary["mean_abs_diff"] = float(diff.mean())
            summary["p95_abs_diff"] = float(np.quantile(diff, 0.95))
    else:
        labels_a, labels_b = frame[a].map(_label), frame[b].map(_label)
        frame["agree"] = labels_a == labels_b
        if len(frame):
            confusion = pd.crosstab(labels_a.rename(a), labels_b.rename(b))
    agree = float(frame["agree"].sum())
    n = float(len(frame))
    low, high = wilson(agree, n)
    summary |= {
        "agreement": agree / n if n else math.nan,
        "agreement_low": low,
        "agreement_high": high,
        "digest_mismatches": float((joined["digest_a"] != joined["digest_b"]).sum()),
    }
    return Comparison(a, b, frame.reset_index(drop=True), summary, confusion)
