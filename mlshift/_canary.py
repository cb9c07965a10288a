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
from typing import TYPE_CHECKING, Any, Final, Literal

from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidArgumentError, MlshiftError, UnknownVersionError

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._view import EndpointView

__all__ = ["CanaryResult", "Gate", "Verdict", "canary", "judge", "run_canary"]

log = logging.getLogger("mlshift.canary")
Verdict = Literal["pass", "fail", "inconclusive"]
_TIME_DTYPE: Final = "datetime64[ns, UTC]"  # the timestamp dtype of every mlshift frame
MESH_HINT = "no healthy pod, connection failures or timeouts; see ep.status()"


@dataclass(frozen=True)
class Gate:
    """Health limits for a canary.

    ``max_error_rate`` is the share of 5xx answers (0.01 = 1 %), the version's own and those
    the mesh made on the way to it (``mesh_errors``); ``max_p99_ms`` the p99
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
    # 5xx the mesh made on the way (no healthy upstream, timeouts) never reached the version
    # and are not in its requests either: callers saw them, so they count against it.
    mesh = float(rows["mesh_errors"].fillna(0).sum()) if "mesh_errors" in rows else 0.0
    rate = (errors + mesh) / (requests + mesh)
    if rate > gate.max_error_rate:
        detail = f" ({mesh:.0f} of them made by the mesh: {MESH_HINT})" if mesh else ""
        return "fail", f"error rate {rate:.1%} > {gate.max_error_rate:.1%}{detail}"
    if gate.max_p99_ms is not None:
        p99 = float(rows["p99_ms"].max())
        if not math.isnan(p99) and p99 > gate.max_p99_ms:
            return "fail", f"p99 {p99:.1f} ms > {gate.max_p99_ms:g} ms"
    return "pass", f"{requests:.0f} requests, error rate {rate:.1%}"


@dataclass
class CanaryResult:
    """What a canary run did: ``promoted`` or ``rolled back``, and every check on the way.

    Example:
        >>> result = ep.canary("v2", steps=(10, 50, 100), interval="30s")  # doctest: +SKIP
        >>> result.outcome, result.to_frame()  # doctest: +SKIP
    """

    version: str
    outcome: str = "running"
    checks: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<CanaryResult {self.version}: {self.outcome} after {len(self.checks)} checks>"

    def to_frame(self) -> pd.DataFrame:
        """The checks as a DataFrame: time (UTC), weight, verdict, reason."""
        import pandas as pd

        frame = pd.DataFrame(self.checks, columns=["time", "weight", "verdict", "reason"])
        # Checks record epoch seconds; show them as UTC timestamps, like every other frame.
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).astype(_TIME_DTYPE)
        return frame


def canary(
    ep: EndpointView,
    version: str,
    *,
    steps: tuple[int, ...] = (10, 25, 50, 100),
    interval: str | float = "30s",
    max_error_rate: float = 0.01,
    max_p99_ms: float | None = None,
    min_requests: int = 20,
    threshold: int = 2,
    max_inconclusive: int = 3,
) -> CanaryResult:
    """Check the options, then step ``version`` of ``ep`` through ``steps`` (``ep.canary``).

    Example:
        >>> canary(ep, "v2", steps=(10, 50, 100), interval="30s")  # doctest: +SKIP
        <CanaryResult v2: promoted after 3 checks>
    """
    ep.status()  # the live versions and weights, not a stale cache
    names = list(ep.versions)
    if version not in names:
        raise UnknownVersionError(
            f"endpoint {ep.name!r} has no version {version!r}; it has {', '.join(names) or 'none'}"
        )
    if not steps or any(not 0 < w <= 100 for w in steps) or list(steps) != sorted(steps):
        raise InvalidArgumentError(
            f"steps must be rising percentages within 1-100, got {steps!r}; e.g. (10, 50, 100)"
        )
    if len(names) < 2:
        raise MlshiftError(f"a canary needs a stable version besides {version!r}")
    return run_canary(
        ep,
        version,
        steps=steps,
        interval=parse_duration(interval, what="interval"),
        gate=Gate(max_error_rate, max_p99_ms, min_requests),
        threshold=threshold,
        max_inconclusive=max_inconclusive,
    )


def run_canary(
    ep: EndpointView,
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
