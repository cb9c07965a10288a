"""Automated canary: step a version's weight up while its metrics stay healthy.

The gate is pure (``judge``): given the canary's rows of a metrics frame it says
``pass``, ``fail`` or ``inconclusive``. No traffic is *inconclusive*, never a pass nor a
failure (Flagger halts and Argo aborts on "no values found"; users asked for "wait"). The
driver (``run_canary``) shifts, waits an interval, judges, and after ``threshold`` failed
checks in a row rolls the canary back to 0 % — the same verbs a person would call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._endpoint import Endpoint

__all__ = ["CanaryResult", "Gate", "Verdict", "judge", "run_canary"]

log = logging.getLogger("mlshift.canary")
Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Gate:
    """Health limits for a canary.

    ``max_error_rate`` is the share of 5xx answers (0.01 = 1 %); ``max_p99_ms`` the p99
    latency limit (None: not checked); ``min_requests`` how many requests an interval needs
    before its numbers count (fewer is inconclusive).
    """

    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    min_requests: int = 20


def judge(frame: pd.DataFrame, version: str, gate: Gate) -> tuple[Verdict, str]:
    """Judge ``version``'s rows of a metrics frame against ``gate``.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"version": ["v2"], "requests": [100.0], "errors": [5.0],
        ...                    "p99_ms": [12.0]})
        >>> judge(df, "v2", Gate(max_error_rate=0.01))[0]
        'fail'
    """
    rows = frame[frame["version"] == version]
    requests = float(rows["requests"].sum()) if not rows.empty else 0.0
    if requests < gate.min_requests:
        return "inconclusive", f"{requests:.0f} requests (< {gate.min_requests}): no verdict yet"
    errors = float(rows["errors"].fillna(0).sum())
    rate = errors / requests
    if rate > gate.max_error_rate:
        return "fail", f"error rate {rate:.1%} > {gate.max_error_rate:.1%}"
    if gate.max_p99_ms is not None:
        p99 = float(rows["p99_ms"].max())
        if not math.isnan(p99) and p99 > gate.max_p99_ms:
            return "fail", f"p99 {p99:.1f} ms > {gate.max_p99_ms:g} ms"
    return "pass", f"{requests:.0f} requests, error rate {rate:.1%}"


@dataclass
class CanaryResult:
    """What a canary run did: ``promoted`` or ``rolled back``, and every check on the way."""

    version: str
    outcome: str = "running"
    checks: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<CanaryResult {self.version}: {self.outcome} after {len(self.checks)} checks>"

    def to_frame(self) -> pd.DataFrame:
        """The checks as a DataFrame: time, weight, verdict, reason."""
        import pandas as pd

        return pd.DataFrame(self.checks, columns=["time", "weight", "verdict", "reason"])


def run_canary(
    ep: Endpoint,
    version: str,
    *,
    steps: Sequence[int],
    interval: float,
    gate: Gate,
    threshold: int,
    max_inconclusive: int,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryResult:
    """Step ``version`` through ``steps`` (percentages), judging each ``interval``."""
    result = CanaryResult(version)
    failures = inconclusive = 0
    stable = max((v for v in ep.weights if v != version), key=lambda v: ep.weights[v])
    for weight in steps:
        ep.shift(version, weight)
        log.info("canary %s at %d %%", version, weight)
        while True:
            sleep(interval)
            frame = ep.metrics(since=interval, step=interval)
            verdict, reason = judge(frame, version, gate)
            result.checks.append(
                {"time": time.time(), "weight": weight, "verdict": verdict, "reason": reason}
            )
            log.info("canary %s at %d %%: %s (%s)", version, weight, verdict, reason)
            if verdict == "pass":
                failures = inconclusive = 0
                break
            if verdict == "fail":
                failures += 1
                if failures >= threshold:
                    ep.promote(stable)
                    result.outcome = f"rolled back to {stable}: {reason}"
                    return result
            else:
                inconclusive += 1
                if inconclusive > max_inconclusive:
                    ep.promote(stable)
                    result.outcome = f"rolled back to {stable}: no traffic to judge ({reason})"
                    return result
    if steps and steps[-1] == 100:
        result.outcome = "promoted"
    else:
        result.outcome = f"held at {steps[-1] if steps else 0} %"
    return result
