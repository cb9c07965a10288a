"""Prediction gates: does the canary answer like the stable version?

- ``PredictionDrift`` compares the canary's prediction distribution over the interval with
  stable's, with the divergence ``ep.predictions`` computes (total variation distance of
  class shares for classifiers, population stability index for regressors).
- ``Agreement`` reads paired answers to the same requests (shadow traffic, ``ep.shadow``:
  the canary gets mirrored copies) and judges the share where both agree with a Wilson
  interval at the look's level.

The run reads what they need (``needs``) only when one of them is among the gates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from mlshift._gates import Interval, Verdict
from mlshift._stats_tests import wilson

__all__ = ["Agreement", "PredictionDrift"]


@dataclass(frozen=True)
class PredictionDrift:
    """Fail when the canary's predictions diverge from stable's beyond ``max_divergence``.

    The divergence is the one ``ep.predictions`` reports: total variation distance of class
    shares for classifiers (0.1: a tenth of the predictions moved to other classes), the
    population stability index for regressors (< 0.1 is usually read as no shift, > 0.25 as
    a major one). It is a point estimate, not a test: below ``min_predictions`` on either
    side the look is inconclusive, since small samples differ by chance.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"version": ["v1", "v1", "v2", "v2"],
        ...                       "class": ["no", "yes"] * 2, "count": [600.0, 400, 100, 300],
        ...                       "divergence": [0.0, 0.0, 0.35, 0.35]})
        >>> frame.attrs.update(divergence="tvd", stable="v1")
        >>> look = Interval("v2", "v1", {"v1": 50, "v2": 50}, pd.DataFrame(), predictions=frame)
        >>> PredictionDrift(max_divergence=0.1).check(look).status
        'fail'
    """

    max_divergence: float = 0.1
    min_predictions: int = 200
    name: str = "prediction-drift"
    needs: ClassVar[tuple[str, ...]] = ("predictions",)

    def check(self, interval: Interval) -> Verdict:
        frame = interval.predictions
        if frame is None:
            why = interval.unavailable.get("predictions", "the run did not read predictions")
            return Verdict(self.name, "inconclusive", f"no prediction counts: {why}")
        c, s = interval.canary, interval.stable
        against = frame.attrs.get("stable", s)
        if against != s:
            return Verdict(
                self.name, "inconclusive", f"divergence is against {against}, not stable {s}"
            )
        kind = str(frame.attrs.get("divergence", "divergence"))
        rows_c, rows_s = frame[frame["version"] == c], frame[frame["version"] == s]
        n_c, n_s = float(rows_c["count"].sum()), float(rows_s["count"].sum())
        numbers = {"canary_predictions": n_c, "stable_predictions": n_s}
        if min(n_c, n_s) < self.min_predictions or rows_c.empty:
            return Verdict(
                self.name,
                "inconclusive",
                f"{n_c:.0f} canary and {n_s:.0f} stable predictions (< {self.min_predictions})",
                numbers,
            )
        score = float(rows_c["divergence"].iloc[0])
        if math.isnan(score):
            return Verdict(self.name, "inconclusive", f"no {kind} for {c}", numbers)
        numbers["divergence"] = score
        worse = score > self.max_divergence
        text = (
            f"{kind} {score:.3f} {'>' if worse else '<='} {self.max_divergence:g}"
            f" ({n_c:.0f} predictions vs {s})"
        )
        return Verdict(self.name, "fail" if worse else "pass", text, numbers)


@dataclass(frozen=True)
class Agreement:
    """Shadow traffic: the share of paired requests where canary and stable answer alike.

    Fails when even the upper Wilson bound is below ``min_rate``, passes when the lower one
    is above, else inconclusive. The bounds are at ``confidence``, by default the look's
    level (two-sided ``1 - 2 * interval.level``, so a canary agreeing at ``min_rate`` fails
    with probability at most ``interval.level``; the p-value of that score test goes to
    Holm). Pairs come from mirrored requests (``ep.shadow``): split traffic gives none.

    Example:
        >>> import pandas as pd
        >>> from mlshift._compare import Comparison
        >>> paired = Comparison("v1", "v2", pd.DataFrame({"agree": [True] * 900 + [False] * 100}))
        >>> look = Interval("v2", "v1", {"v1": 100, "v2": 0}, pd.DataFrame(), comparison=paired)
        >>> Agreement(min_rate=0.95).check(look).status
        'fail'
    """

    min_rate: float = 0.95
    confidence: float | None = None
    min_pairs: int = 20
    name: str = "agreement"
    needs: ClassVar[tuple[str, ...]] = ("comparison",)

    def check(self, interval: Interval) -> Verdict:
        paired = interval.comparison
        if paired is None:
            why = interval.unavailable.get("comparison", "the run did not pair requests")
            return Verdict(self.name, "inconclusive", f"no paired requests: {why}")
        agree = paired.frame["agree"].astype(bool) if "agree" in paired.frame else None
        n = float(len(agree)) if agree is not None else 0.0
        if agree is None or n < self.min_pairs:
            return Verdict(
                self.name,
                "inconclusive",
                f"{n:.0f} paired requests (< {self.min_pairs}); is the canary shadowing"
                f" {interval.stable} (ep.shadow)?",
                {"pairs": n},
            )
        k = float(agree.sum())
        rate = k / n
        confidence = 1 - 2 * interval.level if self.confidence is None else self.confidence
        low, high = wilson(k, n, confidence)
        p = math.nan
        if self.confidence is None:
            p = _below(rate, self.min_rate, n)
        numbers = {"agreement": rate, "low": low, "high": high, "pairs": n, "p_value": p}
        text = (
            f"agreement {rate:.1%} [{low:.1%}, {high:.1%}] over {n:.0f} pairs"
            f" (min {self.min_rate:.1%})"
        )
        if high < self.min_rate:
            return Verdict(self.name, "fail", text, numbers, p)
        if low > self.min_rate:
            return Verdict(self.name, "pass", text, numbers, p)
        return Verdict(self.name, "inconclusive", text, numbers, p)


def _below(rate: float, target: float, n: float) -> float:
    """One-sided score-test p-value of "the true rate is at least ``target``" (the test the
    Wilson interval inverts)."""
    if target >= 1.0:
        return 0.0 if rate < 1.0 else 1.0
    z = (rate - target) / math.sqrt(target * (1 - target) / n)
    return 0.5 * math.erfc(-z / math.sqrt(2.0))
