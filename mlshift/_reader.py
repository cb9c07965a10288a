"""The reading half of the facade: an endpoint as seen, and the verbs that only watch it.

``EndpointReader`` owns what every endpoint handle has (its name, target and engine, and
the one cache of what was last read) and the verbs that read: ``status``, ``history``,
``render``, ``metrics``, ``predictions``, ``plot`` and requests through the router
(``predict``, ``send``). ``Endpoint`` (``mlshift._endpoint``) adds the verbs that change
things. Each verb goes straight to the target's engine (``mlshift._engine.Engine``).

The cache has two parts, each a ``Seen`` (state, history, status): ``_applied``, what the
target last said is applied, and ``_planned``, what dry runs built on top of it in memory.
Properties and reprs show the applied state, or the plan while nothing is applied (and
``render()`` shows the plan when there is one). They never use the network: on the local
target they re-read the endpoint's small state file each time (the engine's ``"fast-load"``
capability), so they are live across processes; on a cluster they show what was last read
(``ep.status()`` reads again).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlshift._display import Version, YAMLText, version_table
from mlshift._durations import parse_duration
from mlshift._exceptions import APIError, ConfigError, MlshiftError, UnknownVersionError
from mlshift._names import check_name
from mlshift._render_gateway import render_any
from mlshift._state import EndpointState, TrafficState

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._client import TrafficRun
    from mlshift._compare import Comparison
    from mlshift._engine import Engine, Target, VersionStatus
    from mlshift._histogram import LatencyHistogram

__all__ = ["EndpointReader", "Seen"]

log = logging.getLogger("mlshift")
STATUS_COLUMNS = [
    "version",
    "weight",
    "ready",
    "reason",
    "replicas",
    "ready_replicas",
    "address",
    "warning",
]


@dataclass(frozen=True)
class Seen:
    """One reading of an endpoint: its state (None: nothing deployed), history and status."""

    state: EndpointState | None = None
    history: tuple[TrafficState, ...] = ()
    status: Mapping[str, VersionStatus] = field(default_factory=dict)


class EndpointReader:
    """An endpoint's name, target and cached state, and the verbs that read it.

    Use ``mlshift.endpoint(name)`` (an ``Endpoint``, which adds the changing verbs).

    Example:
        >>> ep = mlshift.endpoint("churn")  # doctest: +SKIP
        >>> ep.metrics(since="2m")  # doctest: +SKIP
    """

    def __init__(self, name: str, target: Target | None = None) -> None:
        self.name = check_name(name, kind="endpoint name")
        if target is None:
            from mlshift.local import Local

            target = Local()
        self.target: Target = target
        self._engine: Engine | None = None
        self._applied = Seen()
        self._planned: Seen | None = None

    @property
    def engine(self) -> Engine:
        """The target's engine for this endpoint (created on first use)."""
        if self._engine is None:
            self._engine = self.target.engine(self.name)
        return self._engine

    @property
    def _state(self) -> EndpointState | None:
        """The applied state as last read."""
        return self._applied.state

    # -- reading the target ------------------------------------------------------------------

    def _load(self) -> EndpointState | None:
        """Read the applied state and history from the target (status is kept as last asked)."""
        loaded = self.engine.load(self.name)
        state, history = loaded if loaded is not None else (None, ())
        self._applied = Seen(state, history, self._applied.status)
        return state

    def _base(self, *, dry_run: bool) -> Seen:
        """What a change builds on: the live state; in a dry run, earlier dry runs first, and
        the cache when the target cannot be reached (dry runs need no cluster)."""
        if dry_run and self._planned is not None:
            return self._planned
        try:
            self._load()
        except (ConfigError, APIError) as exc:
            if not dry_run:
                raise
            log.info("dry run without a reachable target (%s); planning from memory", exc)
        return self._applied

    def _existing(self, version: str | None, *, dry_run: bool) -> Seen:
        """Read what a change builds on; check there are versions, and ``version`` among them."""
        seen = self._base(dry_run=dry_run)
        if seen.state is None or not seen.state.versions:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no versions yet; deploy one with"
                " ep.deploy(model, 'v1')"
            )
        if version is not None:
            self._known(seen.state, version)
        return seen

    def _known(self, state: EndpointState, version: str) -> None:
        if state.version(version) is None:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no version {version!r}; it has "
                f"{', '.join(state.version_names)}"
            )

    def _readable(self) -> EndpointState | None:
        """The state to read metrics for; without the target's API (metrics need only
        Prometheus on a cluster) the cached state, or just the endpoint's name."""
        try:
            return self._load()
        except (ConfigError, APIError) as exc:
            log.info("reading metrics without the target's API (%s)", exc)
            return self._state or EndpointState(self.name, namespace=self.target.namespace())

    def _shown(self) -> tuple[EndpointState | None, bool]:
        """What reprs and properties show: the applied state, else the dry-run plan.

        Where the engine reads its state without the network (the local target: one small
        file), the live state is read every time, so a new process sees the endpoint at once
        and another process's shift shows here; elsewhere, what was last read.
        """
        if self._applied.state is None and self._planned is not None:
            return self._planned.state, True
        try:
            if "fast-load" in self.engine.capabilities:
                self._load()
        except MlshiftError as exc:  # a property never raises: show what was last read
            log.debug("showing %s as last read (%s)", self.name, exc)
        if self._applied.state is None and self._planned is not None:
            return self._planned.state, True
        return self._applied.state, False

    # -- properties (no I/O) -----------------------------------------------------------------

    @property
    def versions(self) -> dict[str, Version]:
        """The versions by name (no network; see ``_shown``); before anything is applied, as planned
        by dry runs.

        Example:
            >>> ep.versions["v2"]  # doctest: +SKIP
            <Version v2 10% ready>
        """
        state, _ = self._shown()
        if state is None:
            return {}
        status = self._applied.status
        out = {}
        for spec in state.versions:
            st = status.get(spec.name)
            out[spec.name] = Version(
                name=spec.name,
                weight=int(state.traffic.weights.get(spec.name, 0)),
                ready=st.ready if st else None,
                model_sha256=spec.model_sha256,
                image=spec.image,
                bundle=spec.bundle,
                reason=st.reason if st else "",
            )
        return out

    @property
    def weights(self) -> dict[str, int]:
        """The traffic weights (no network; see ``_shown``); before anything is applied, as planned.

        Example:
            >>> ep.weights  # doctest: +SKIP
            {'v1': 90, 'v2': 10}
        """
        state, _ = self._shown()
        return dict(state.traffic.weights) if state else {}

    @property
    def url(self) -> str:
        """The address requests to this endpoint go to (read once, then cached).

        Example:
            >>> ep.url  # doctest: +SKIP
            'http://127.0.0.1:38121'
        """
        state = self._state or self._existing(None, dry_run=False).state
        assert state is not None  # _existing raised otherwise
        return self.engine.url(state)

    # -- reading verbs -----------------------------------------------------------------------

    def status(self) -> pd.DataFrame:
        """Ask the target how every version is doing: weight, readiness and why not.

        Example:
            >>> ep.status()  # doctest: +SKIP
                weight  ready reason
            v1      90   True
        """
        import pandas as pd

        state = self._load()
        status = self.engine.status(state) if state else {}
        self._applied = dataclasses.replace(self._applied, status=status)
        rows = [dataclasses.asdict(s) for s in status.values()]
        frame = pd.DataFrame(rows, columns=STATUS_COLUMNS).set_index("version")
        frame.attrs["routing"] = state.routing if state else None
        return frame

    def history(self) -> list[dict[str, int]]:
        """Past traffic weights, oldest first (what ``rollback()`` returns to).

        Example:
            >>> ep.history()  # doctest: +SKIP
            [{'v1': 100}, {'v1': 90, 'v2': 10}]
        """
        self._load()
        return [dict(t.weights) for t in self._applied.history]

    def render(self) -> YAMLText:
        """Return the endpoint's Kubernetes and Istio objects as multi-document YAML.

        Works without a cluster after dry-run deploys. Example:
            >>> print(ep.render())  # doctest: +SKIP
        """
        seen = self._planned or (self._applied if self._state else self._base(dry_run=True))
        if seen.state is None:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no versions to render; deploy one (dry_run=True works)"
            )
        return YAMLText(render_any(seen.state).to_yaml())

    def metrics(self, since: str | float = "5m", step: str | float = "10s") -> pd.DataFrame:
        """Per-version request rate, errors and latency: one row per (time, version).

        Columns: timestamp, version, requests, rps, errors, error_rate, p50_ms, p95_ms,
        p99_ms, share. No traffic gives an empty frame (or NaN), never an error.

        Example:
            >>> ep.metrics(since="2m")  # doctest: +SKIP
        """
        seconds = parse_duration(since, what="since")
        resolution = parse_duration(step, what="step")
        state = self._readable()
        if state is None:
            from mlshift._frame import empty_frame

            return empty_frame()
        return self.engine.metrics(state, since=seconds, step=resolution)

    def checkpoint(self) -> float:
        """Start a measurement window now: the epoch time from which ``metrics`` and
        ``latency_histograms`` count only the requests answered after this call. Locally the
        router's counters are otherwise read once a second, so a window starting between two
        reads would count from the earlier one, traffic from before included.

        Example:
            >>> start = ep.checkpoint()  # doctest: +SKIP
            >>> ep.metrics(since=time.time() - start, step="1h")  # doctest: +SKIP
        """
        state = self._readable()
        return time.time() if state is None else self.engine.checkpoint(state)

    def latency_histograms(self, since: str | float = "5m") -> dict[str, LatencyHistogram]:
        """Each version's request latencies (ms) over the last ``since``, as histogram buckets
        (the router's: Envoy's locally, Istio's in Prometheus on a cluster); what the canary's
        latency gate tests where per-request latencies cannot be read.

        Example:
            >>> ep.latency_histograms(since="2m")["v2"].quantile(0.99)  # doctest: +SKIP
            48.1
        """
        seconds = parse_duration(since, what="since")
        state = self._readable()
        if state is None:
            return {}
        return self.engine.latency_histograms(state, since=seconds)

    def predictions(self, since: str | float = "15m", *, stable: str | None = None) -> pd.DataFrame:
        """What each version predicts: class shares (or quantiles) and divergence from stable.

        ``divergence`` compares each version with ``stable`` (by default the one carrying the
        most traffic): total
        variation distance for classifiers, PSI for regressors. Counts cover the last
        ``since``: locally from samples of the servers' own ``/metrics``, on Kubernetes from
        Prometheus (series labelled with the pod's ``namespace``, as Istio's Prometheus
        scrape configuration does).

        Example:
            >>> ep.predictions(since="10m")  # doctest: +SKIP
        """
        from mlshift._prediction_stats import predictions_frame

        seconds = parse_duration(since, what="since")
        state = self._readable()
        if state is None:
            return predictions_frame([])
        stats = self.engine.predictions(state, since=seconds)
        weights = state.traffic.weights
        if stable is None and weights:
            stable = max(weights, key=lambda v: weights[v])
        return predictions_frame(stats, stable=stable)

    def journal(self, version: str, since: str | float = "10m") -> pd.DataFrame:
        """The inference requests ``version`` answered in the last ``since``: one row per
        predicted value (``time, id, row, status, latency_ms, digest, prediction``).

        Example:
            >>> ep.journal("v2", since="5m")  # doctest: +SKIP
        """
        import time

        from mlshift._compare import journal_frame

        seconds = parse_duration(since, what="since")
        state = self._readable()
        if state is None:
            return journal_frame([])
        self._known(state, version)
        return journal_frame(self.engine.journal(state, version, since=time.time() - seconds))

    def compare(self, a: str, b: str, since: str | float = "10m") -> Comparison:
        """Pair two versions' answers to the same requests (shadow traffic: ``ep.shadow``).

        Joins both versions' journals on Envoy's request id: ``.frame`` has one row per
        paired prediction (both answers, ``agree``, ``abs_diff`` for regressors);
        ``.summary`` the agreement rate with a 95 % Wilson interval (and mean / p95
        difference for regressors); ``.confusion`` a confusion matrix for classifiers.

        Example:
            >>> ep.shadow("v2", percent=100)  # doctest: +SKIP
            >>> ep.compare("v1", "v2", since="10m").summary  # doctest: +SKIP
        """
        from mlshift._compare import compare

        return compare(a, self.journal(a, since), b, self.journal(b, since))

    def predict(self, data: Any, *, method: str = "predict", timeout: float = 30.0) -> pd.DataFrame:
        """Send ``data`` through the router; the frame says which version answered.

        ``data``: a DataFrame (each column sent in its own dtype), a list of dicts (one per
        row), a dict (one row), a list of rows or an array. ``method="predict_proba"`` gives
        one column per class (named by the model's classes) instead of ``prediction``.

        Example:
            >>> ep.predict(X_test[:3])  # doctest: +SKIP
            >>> ep.predict(X_test[:3], method="predict_proba")  # doctest: +SKIP
        """
        from mlshift._client import predict

        frame: pd.DataFrame = predict(self.url, self.name, data, method=method, timeout=timeout)
        return frame

    def send(
        self,
        data: Any,
        *,
        rps: float = 20,
        duration: str | float = "30s",
        concurrency: int = 16,
        method: str = "predict",
    ) -> TrafficRun:
        """Send single rows of ``data`` at ``rps`` in the background for ``duration``.

        ``data`` takes the forms ``predict`` takes; ``method`` is what each request asks of
        the model (``"predict"`` or ``"predict_proba"``).

        Example:
            >>> run = ep.send(X_test, rps=50, duration="30s")  # doctest: +SKIP
        """
        from mlshift._client import TrafficRun

        seconds = parse_duration(duration, what="duration")
        return TrafficRun(
            self.url,
            self.name,
            data,
            rps=rps,
            duration=seconds,
            concurrency=concurrency,
            method=method,
        )

    def plot(
        self, since: str | float = "5m", *, step: str | float = "10s", predictions: bool = False
    ) -> Any:
        """One matplotlib Figure: traffic share, error rate and p99 latency per version.

        ``predictions=True`` adds a panel of what each version predicts.

        Example:
            >>> ep.plot(since="10m")  # doctest: +SKIP
        """
        # A lazy shim: the face (mlshift.plot) sits above the facade and loads matplotlib.
        from mlshift.plot import dashboard

        frame = self.metrics(since=since, step=step)
        preds = self.predictions(since=since) if predictions else None
        return dashboard(frame, predictions=preds, title=f"{self.name} ({self.target.name})")

    def plot_compare(
        self, a: str, b: str, since: str | float = "10m", *, step: str = "1min"
    ) -> Any:
        """How often ``a`` and ``b`` gave the same answer to the same request, over time.

        Example:
            >>> ep.shadow("v2"); ep.plot_compare("v1", "v2", since="30m")  # doctest: +SKIP
        """
        from mlshift.plot import agreement  # lazy shim, as plot()

        cmp = self.compare(a, b, since=since)
        return agreement(cmp.over_time(step), title=repr(cmp)).figure

    # -- display -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        weights = ", ".join(f"{v}={w}" for v, w in self.weights.items())
        planned = " (dry run)" if self._shown()[1] else ""
        state = self._shown()[0]
        # Istio's VirtualService is the default; only the Gateway API is named.
        via = " via gateway-api" if state is not None and state.routing != "istio" else ""
        return (
            f"<Endpoint {self.name} on {self.target.name}{via}{planned}:"
            f" {weights or 'no versions'}>"
        )

    def _repr_html_(self) -> str:
        planned = ", dry run: planned, not applied" if self._shown()[1] else ""
        state = self._shown()[0]
        via = ", via gateway-api" if state is not None and state.routing != "istio" else ""
        title = f"{self.name} ({self.target.name}{via}{planned})"
        return version_table(list(self.versions.values()), title)
