"""How long each canary step must last for the error gate to decide, before a run starts.

``canary_plan`` turns the endpoint's request rate and error rate into the requests and
seconds each step needs (``mlshift._stats_tests.min_sample``), so an interval can be chosen
that lets the judge pass or fail rather than say inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlshift._stats_tests import min_sample

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["canary_plan"]


def canary_plan(
    *,
    rps: float,
    baseline_error_rate: float,
    tolerance: float = 0.005,
    steps: Sequence[int] = (5, 25, 50, 100),
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """How long each step must last for the error gate to decide, before a run starts.

    ``rps`` is the endpoint's whole request rate; at weight ``w`` % the canary gets
    ``rps * w / 100`` of it and needs ``min_sample(baseline_error_rate, tolerance)`` requests
    (enough to fail, with ``power``, a canary twice the tolerance worse). Use the longest
    ``seconds`` (the first step's) as ``interval``, or steps with larger weights.

    Example:
        >>> plan = canary_plan(rps=200, baseline_error_rate=0.005, tolerance=0.01)
        >>> plan.loc[0, ["weight", "requests_needed"]].tolist()
        [5, 1914]
    """
    import pandas as pd

    need = min_sample(max(baseline_error_rate, 0.001), tolerance, alpha=alpha, power=power)
    rows = []
    for weight in steps:
        canary_rps = rps * weight / 100
        rows.append(
            {
                "weight": weight,
                "canary_rps": canary_rps,
                "requests_needed": need,
                "seconds": need / canary_rps if canary_rps > 0 else math.inf,
            }
        )
    return pd.DataFrame(rows)
