"""Automated canary: step a version's weight up while gates find it as good as stable.

``canary()`` checks the options and starts a ``CanaryRun``: in a background thread (or in
the caller's, with ``blocking=True``) it shifts the canary to each step, and every
``interval`` judges everything seen since the step began with the gates (``mlshift._gates``).

- A *pass* moves to the next step; a last step at 100 % is the promotion itself (it is not
  judged: the stable version gets no traffic left to compare with).
- ``threshold`` looks in a row that *fail* (or are *invalid*: routing does not match the
  weights) roll back. "In a row" means consecutive looks: a pass or an inconclusive look
  breaks the streak.
- ``max_inconclusive`` inconclusive looks in a row at one step (not enough traffic to
  decide) time the run out: it rolls back without promoting.
- Rollback restores the exact split in place before the run started (three-way splits
  included), and so does a cancellation or any exception (``try``/``finally``); the outcome
  says why.

Statistics: look ``k`` of a run spends ``alpha / (k (k + 1))`` of the false-failure budget
(these sum to ``alpha``), and the gates of one look are corrected with Holm, so a healthy
canary is rolled back with probability at most ``alpha`` over the whole run however many
looks it takes (the union bound; no independence needed).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidArgumentError, MlshiftError, UnknownVersionError
from mlshift._gates import (
    Gate,
    Interval,
    MaxErrorRate,
    MaxLatency,
    Verdict,
    default_gates,
    judge,
)
from mlshift._stats_tests import look_alpha

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

    from mlshift._histogram import LatencyHistogram
    from mlshift._view import EndpointView

__all__ = ["CanaryResult", "CanaryRun", "canary", "run_canary"]

log = logging.getLogger("mlshift.canary")
_TIME_DTYPE: Final = "datetime64[ns, UTC]"  # the timestamp dtype of every mlshift frame
_COLUMNS: Final = ["time", "weight", "look", "verdict", "reason"]


class _Cancelled(Exception):
    """Raised inside the run when ``cancel()`` was called."""


def describe_split(weights: dict[str, int]) -> str:
    """``{"v1": 100, "v2": 0}`` -> ``v1``; ``{"v1": 70, "v3": 30}`` -> ``v1 70 %, v3 30 %``."""
    carrying = {v: w for v, w in weights.items() if w}
    if len(carrying) == 1:
        return next(iter(carrying))
    return ", ".join(f"{v} {w} %" for v, w in carrying.items())


@dataclass
class CanaryResult:
    """What a canary run did: its ``outcome`` and every look on the way.

    ``outcome`` is ``running``, ``promoted``, ``held at N %`` or ``rolled back to ...: why``
    (a failure, a timeout, a cancellation or an error). Example:
        >>> result = ep.canary("v2", steps=(10, 50, 100), interval="30s").wait()  # doctest: +SKIP
        >>> result.outcome, result.to_frame()  # doctest: +SKIP
    """

    version: str
    outcome: str = "running"
    checks: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<CanaryResult {self.version}: {self.outcome} after {len(self.checks)} checks>"

    @property
    def promoted(self) -> bool:
        """Whether the canary ended with all traffic."""
        return self.outcome == "promoted"

    def to_frame(self) -> pd.DataFrame:
        """The looks as a DataFrame: time (UTC), weight, look, verdict, reason, then one
        ``<gate>`` column per gate (its verdict) and the gates' numbers."""
        import pandas as pd

        frame = pd.DataFrame(self.checks)
        for column in _COLUMNS:
            if column not in frame:
                frame[column] = pd.Series(dtype="float64" if column == "time" else "object")
        rest = [c for c in frame.columns if c not in _COLUMNS]
        frame = frame[_COLUMNS + rest]
        # Looks record epoch seconds; show them as UTC timestamps, like every other frame.
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).astype(_TIME_DTYPE)
        return frame


class CanaryRun(CanaryResult):
    """A canary in progress (or done): ``wait()``, ``cancel()``, ``history``, a live view.

    Example:
        >>> run = ep.canary("v2", steps=(5, 25, 50, 100), interval="1m")  # doctest: +SKIP
        >>> run.history  # doctest: +SKIP
        >>> run.wait().outcome  # doctest: +SKIP
        'promoted'
    """

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.error: BaseException | None = None
        self.restored: dict[str, int] | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._widgets: list[Any] = []

    def __repr__(self) -> str:
        return f"<CanaryRun {self.version}: {self.outcome} after {len(self.checks)} checks>"

    @property
    def done(self) -> bool:
        """Whether the run has finished (promoted, held or rolled back)."""
        return self._done.is_set()

    @property
    def history(self) -> pd.DataFrame:
        """Every look so far (``to_frame()``)."""
        return self.to_frame()

    def wait(self, timeout: float | None = None) -> CanaryRun:
        """Block until the run ends (or ``timeout`` seconds pass); re-raise its error, if any.

        Example:
            >>> run.wait().outcome  # doctest: +SKIP
        """
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return self

    def cancel(self, timeout: float | None = 60.0) -> CanaryRun:
        """Stop the run and restore the split in place before it started.

        Example:
            >>> run.cancel().outcome  # doctest: +SKIP
            'rolled back to v1: cancelled'
        """
        self._stop.set()
        self._done.wait(timeout)
        return self

    def widget(self) -> Any:
        """An ipywidgets HTML view of this run that refreshes after every look.

        Example:
            >>> run.widget()  # doctest: +SKIP
        """
        import ipywidgets

        view = ipywidgets.HTML(self._repr_html_())
        self._widgets.append(view)
        return view

    def _changed(self) -> None:
        for view in self._widgets:
            view.value = self._repr_html_()

    def _repr_html_(self) -> str:
        rows = []
        for check in self.checks[-12:]:
            colour = {"pass": "#2a2", "fail": "#c22", "invalid": "#c60"}.get(
                check["verdict"], "#888"
            )
            rows.append(
                f"<tr><td>{check['look']}</td><td>{check['weight']} %</td>"
                f"<td style='color:{colour}'><b>{html.escape(check['verdict'])}</b></td>"
                f"<td style='text-align:left'>{html.escape(check['reason'])}</td></tr>"
            )
        head = "<tr><th>look</th><th>weight</th><th>verdict</th><th>reason</th></tr>"
        return (
            f"<div><b>canary {html.escape(self.version)}</b>: {html.escape(self.outcome)}"
            f"<table>{head}{''.join(rows)}</table></div>"
        )


def _latencies(
    ep: EndpointView, versions: Sequence[str], since: float
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-request latencies (ms) from each version's journal, where the target keeps one."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    for version in versions:
        try:
            journal = ep.journal(version, since=since)
        except MlshiftError as exc:
            # Said at every look: the fix (RBAC, a reachable pod) is in the message.
            log.info(
                "no per-request latencies for %s (histogram buckets instead): %s", version, exc
            )
            return {}
        if not journal.empty:
            out[version] = journal["latency_ms"].to_numpy(dtype=np.float64)
    return out


def _histograms(
    ep: EndpointView, latencies: Mapping[str, object], versions: Sequence[str], since: float
) -> dict[str, LatencyHistogram]:
    """Each version's latency histogram over the look, when a version has no per-request
    latencies (its journal could not be read, or holds nothing): the gate tests buckets then."""
    if all(v in latencies for v in versions):
        return {}
    try:
        return ep.latency_histograms(since=since)
    except MlshiftError as exc:
        log.debug("no latency histograms: %s", exc)
        return {}


def _extras(
    ep: EndpointView, gates: Sequence[Gate], canary: str, stable: str, since: float
) -> dict[str, Any]:
    """What the gates ``need`` beyond metrics and latencies: prediction counts, paired
    answers. Read only when a gate asks; what the target cannot give goes to
    ``unavailable`` with the reason, and those gates say inconclusive."""
    needs = {need for gate in gates for need in getattr(gate, "needs", ())}
    extras: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    if "predictions" in needs:
        try:
            extras["predictions"] = ep.predictions(since=since, stable=stable)
        except MlshiftError as exc:
            unavailable["predictions"] = str(exc)
    if "comparison" in needs:
        try:
            extras["comparison"] = ep.compare(stable, canary, since=since)
        except MlshiftError as exc:
            unavailable["comparison"] = str(exc)
    if unavailable:
        extras["unavailable"] = unavailable
    return extras


def run_canary(
    ep: EndpointView,
    version: str,
    *,
    steps: Sequence[int],
    interval: float,
    gates: Sequence[Gate],
    threshold: int = 2,
    max_inconclusive: int = 3,
    alpha: float = 0.05,
    run: CanaryRun | None = None,
    sleep: Callable[[float], bool] | None = None,
) -> CanaryRun:
    """Step ``version`` through ``steps`` (percentages), judging every ``interval`` seconds.

    Runs in the calling thread; ``canary()`` is the checked entry point. ``sleep(seconds)``
    waits and returns True to cancel (default: the run's cancel event).

    Example:
        >>> gates = default_gates()
        >>> run_canary(ep, "v2", steps=(50, 100), interval=30, gates=gates)  # doctest: +SKIP
    """
    run = run or CanaryRun(version)
    wait = sleep or run._stop.wait
    ep.status()
    original = dict(ep.weights)
    stable = max((v for v in original if v != version), key=lambda v: original[v])
    why = "cancelled"
    finished = False
    try:
        look = 0
        for weight in steps:
            ep.shift(version, weight)
            log.info("canary %s at %d %%", version, weight)
            if weight == 100:
                break  # the promotion: with no stable traffic left there is nothing to compare
            # From a read taken after the shift: the read before it may be a second older,
            # and the stable-only traffic since would count as this step's (a false
            # sample-ratio mismatch).
            start = ep.checkpoint()
            fails = inconclusive = 0
            while True:
                if wait(interval):
                    raise _Cancelled
                look += 1
                since = max(time.time() - start, 1e-3)
                frame = ep.metrics(since=since, step=since)
                latencies = _latencies(ep, (version, stable), since)
                look_at = Interval(
                    version,
                    stable,
                    dict(ep.weights),
                    frame,
                    latencies,
                    histograms=_histograms(ep, latencies, (version, stable), since),
                    alpha=alpha,
                    level=look_alpha(alpha, look),
                    look=look,
                    **_extras(ep, gates, version, stable, since),
                )
                overall, verdicts = judge(look_at, gates)
                _record(run, weight, look, overall, verdicts)
                log.info(
                    "canary %s at %d %%: %s (%s)", version, weight, overall.status, overall.reason
                )
                if overall.status == "pass":
                    break
                if overall.status in ("fail", "invalid"):
                    fails, inconclusive = fails + 1, 0
                    if fails >= threshold:
                        why = overall.reason
                        return run
                else:
                    fails, inconclusive = 0, inconclusive + 1
                    if inconclusive > max_inconclusive:
                        why = f"timed out at {weight} % ({overall.reason})"
                        return run
        finished = True
        run.outcome = "promoted" if steps[-1] == 100 else f"held at {steps[-1]} %"
        return run
    except _Cancelled:
        return run
    except BaseException as exc:
        why = f"error: {type(exc).__name__}: {exc}"
        run.error = exc
        raise
    finally:
        if not finished:
            _restore(ep, run, original, why)
        run._done.set()
        run._changed()


def _record(
    run: CanaryRun, weight: int, look: int, overall: Verdict, verdicts: Sequence[Verdict]
) -> None:
    check: dict[str, Any] = {
        "time": time.time(),
        "weight": weight,
        "look": look,
        "verdict": overall.status,
        "reason": overall.reason,
    }
    for v in verdicts:
        check[v.gate] = v.status
    check.update(overall.numbers)
    run.checks.append(check)
    run._changed()


def _restore(ep: EndpointView, run: CanaryRun, original: dict[str, int], why: str) -> None:
    """Put back the split in place before the run, whatever happened."""
    try:
        ep.shift(original)
    except Exception as exc:
        log.exception("canary %s: could not restore %s", run.version, original)
        run.outcome = f"NOT rolled back ({exc}); was rolling back because: {why}"
        raise
    run.restored = original
    run.outcome = f"rolled back to {describe_split(original)}: {why}"
    log.warning("canary %s %s", run.version, run.outcome)


def canary(
    ep: EndpointView,
    version: str,
    *,
    steps: Sequence[int] = (10, 25, 50, 100),
    interval: str | float = "30s",
    gates: Sequence[Gate] | None = None,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
    min_requests: int = 20,
    threshold: int = 2,
    max_inconclusive: int = 3,
    alpha: float = 0.05,
    blocking: bool = False,
) -> CanaryRun:
    """Check the options, then step ``version`` of ``ep`` through ``steps`` (``ep.canary``).

    Example:
        >>> canary(ep, "v2", steps=(10, 50, 100), interval="30s").wait()  # doctest: +SKIP
        <CanaryRun v2: promoted after 3 checks>
    """
    ep.status()  # the live versions and weights, not a stale cache
    names = list(ep.versions)
    if version not in names:
        raise UnknownVersionError(
            f"endpoint {ep.name!r} has no version {version!r}; it has {', '.join(names) or 'none'}"
        )
    steps = tuple(steps)
    if not steps or any(not 0 < w <= 100 for w in steps) or list(steps) != sorted(steps):
        raise InvalidArgumentError(
            f"steps must be rising percentages within 1-100, got {steps!r}; e.g. (10, 50, 100)"
        )
    if not 0 < alpha < 1 or threshold < 1 or max_inconclusive < 0:
        raise InvalidArgumentError(
            f"need 0 < alpha < 1, threshold >= 1, max_inconclusive >= 0; got {alpha},"
            f" {threshold}, {max_inconclusive}"
        )
    if len(names) < 2:
        raise MlshiftError(f"a canary needs a stable version besides {version!r}")
    chosen: list[Gate] = list(gates) if gates is not None else default_gates()
    if max_error_rate is not None:
        chosen.append(MaxErrorRate(max_error_rate, min_requests))
    if max_p99_ms is not None:
        chosen.append(MaxLatency(max_p99_ms, min_requests))
    seconds = parse_duration(interval, what="interval")
    run = CanaryRun(version)
    options: dict[str, Any] = {
        "steps": steps,
        "interval": seconds,
        "gates": chosen,
        "threshold": threshold,
        "max_inconclusive": max_inconclusive,
        "alpha": alpha,
        "run": run,
    }
    if blocking:
        return run_canary(ep, version, **options)
    worker = ep.reader()  # the thread reads and writes through a handle of its own

    def drive() -> None:
        try:
            run_canary(worker, version, **options)
        except BaseException:  # kept in run.error and re-raised by run.wait()
            log.exception("canary %s stopped by an error", version)

    run._thread = threading.Thread(target=drive, name=f"mlshift-canary-{version}", daemon=True)
    run._thread.start()
    return run
