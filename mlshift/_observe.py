"""Reading an endpoint: requests through its router, metrics, predictions, plots, canary.

These are the verbs that watch rather than change (``canary`` changes weights only through
``shift``/``promote``). They are mixed into ``Endpoint``, whose state and engine they use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mlshift._exceptions import MlshiftError

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._canary import CanaryResult
    from mlshift._client import TrafficRun
    from mlshift._endpoint import Endpoint
    from mlshift._engine import Engine, Target
    from mlshift._state import EndpointState

__all__ = ["Observing"]


class Observing:
    """The reading half of ``Endpoint`` (see there)."""

    if TYPE_CHECKING:
        name: str
        target: Target

        @property
        def engine(self) -> Engine: ...

        @property
        def url(self) -> str: ...

        def _readable(self) -> EndpointState | None: ...

        def _existing(self, version: str | None, *, dry_run: bool) -> EndpointState: ...

        def _known(self, state: EndpointState, version: str) -> None: ...

        def shift(
            self, weights: Any, percent: int | None = None, *, dry_run: bool = False
        ) -> Any: ...

        def promote(self, version: str, *, dry_run: bool = False) -> Any: ...

        @property
        def weights(self) -> dict[str, int]: ...

    def predict(self, data: Any, *, timeout: float = 30.0) -> pd.DataFrame:
        """Send ``data`` through the router; the frame says which version answered.

        Example:
            >>> ep.predict(X_test[:3])  # doctest: +SKIP
        """
        from mlshift._client import predict

        return predict(self.url, self.name, data, timeout=timeout)  # type: ignore[no-any-return]

    def send(
        self, data: Any, *, rps: float = 20, duration: str | float = "30s", concurrency: int = 16
    ) -> TrafficRun:
        """Send single rows of ``data`` at ``rps`` in the background for ``duration``.

        Example:
            >>> run = ep.send(X_test, rps=50, duration="30s")  # doctest: +SKIP
        """
        from mlshift._client import TrafficRun
        from mlshift._durations import parse_duration

        seconds = parse_duration(duration, what="duration")
        return TrafficRun(
            self.url, self.name, data, rps=rps, duration=seconds, concurrency=concurrency
        )

    def metrics(self, since: str | float = "5m", step: str | float = "10s") -> pd.DataFrame:
        """Per-version request rate, errors and latency: one row per (time, version).

        Columns: timestamp, version, requests, rps, errors, error_rate, p50_ms, p95_ms,
        p99_ms, share. No traffic gives an empty frame (or NaN), never an error.

        Example:
            >>> ep.metrics(since="2m")  # doctest: +SKIP
        """
        from mlshift._durations import parse_duration

        state = self._readable()
        if state is None:
            from mlshift.metrics import empty_frame

            return empty_frame()
        return self.engine.metrics(
            state,
            since=parse_duration(since, what="since"),
            step=parse_duration(step, what="step"),
        )

    def predictions(self, since: str | float = "15m") -> pd.DataFrame:
        """What each version predicts: class shares (or quantiles) and divergence from stable.

        ``divergence`` compares each version with the one carrying the most traffic: total
        variation distance for classifiers, PSI for regressors. Counts cover the last
        ``since``: locally from samples of the servers' own ``/metrics``, on Kubernetes from
        Prometheus (series labelled with the pod's ``namespace``, as Istio's Prometheus
        scrape configuration does).

        Example:
            >>> ep.predictions(since="10m")  # doctest: +SKIP
        """
        from mlshift._durations import parse_duration
        from mlshift.metrics import parse_exposition, predictions_frame, prometheus_predictions

        seconds = parse_duration(since, what="since")
        state = self._readable()
        if state is None:
            return predictions_frame([])
        windowed = getattr(self.engine, "predictions", None)
        prometheus_url = getattr(self.target, "prometheus_url", None)
        if windowed is not None:  # the local engine keeps its own samples
            stats = windowed(state, since=seconds)
        elif prometheus_url:
            stats = prometheus_predictions(
                str(prometheus_url),
                model=self.name,
                since=seconds,
                labels={"namespace": state.namespace},
                token=getattr(self.target, "prometheus_token", None),
                headers=getattr(self.target, "prometheus_headers", None),
            )
        else:
            texts = self.engine.prediction_metrics(state, since=seconds)
            stats = [s for text in texts.values() for s in parse_exposition(text, model=self.name)]
        weights = state.traffic.weights
        stable = max(weights, key=lambda v: weights[v]) if weights else None
        return predictions_frame(stats, stable=stable)

    def plot(
        self, since: str | float = "5m", *, step: str | float = "10s", predictions: bool = False
    ) -> Any:
        """One matplotlib Figure: traffic share, error rate and p99 latency per version.

        ``predictions=True`` adds a panel of what each version predicts.

        Example:
            >>> ep.plot(since="10m")  # doctest: +SKIP
        """
        from mlshift.plot import dashboard

        frame = self.metrics(since=since, step=step)
        preds = self.predictions(since=since) if predictions else None
        return dashboard(frame, predictions=preds, title=f"{self.name} ({self.target.name})")

    def slider(self, **options: Any) -> Any:
        """An ipywidgets control that shifts traffic, with live per-version plots.

        It does not display itself, so it composes; see ``mlshift._widgets.traffic_slider``
        for the options. Example:
            >>> ep.slider()  # doctest: +SKIP
        """
        from mlshift._widgets import traffic_slider

        return traffic_slider(cast("Endpoint", self), **options)

    def canary(
        self,
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
        """Step ``version``'s weight through ``steps`` while its metrics stay healthy.

        After each step it waits ``interval`` and judges the canary's error rate (and p99
        latency when ``max_p99_ms`` is set). ``threshold`` failed checks in a row send all
        traffic back to the stable version; an interval with fewer than ``min_requests``
        requests is inconclusive and is waited out (at most ``max_inconclusive`` times).
        Promotion takes about ``interval`` x ``len(steps)``. Blocks until done.

        Example:
            >>> ep.canary("v2", steps=(10, 50, 100), interval="30s")  # doctest: +SKIP
            <CanaryResult v2: promoted after 3 checks>
        """
        from mlshift._canary import Gate, run_canary
        from mlshift._durations import parse_duration

        state = self._existing(None, dry_run=False)
        self._known(state, version)
        if not steps or any(not 0 < w <= 100 for w in steps) or list(steps) != sorted(steps):
            raise ValueError(f"steps must be rising percentages within 1-100, got {steps!r}")
        if len(state.versions) < 2:
            raise MlshiftError(f"a canary needs a stable version besides {version!r}")
        gate = Gate(max_error_rate, max_p99_ms, min_requests)
        seconds = parse_duration(interval, what="interval")
        return run_canary(
            cast("Endpoint", self),
            version,
            steps=steps,
            interval=seconds,
            gate=gate,
            threshold=threshold,
            max_inconclusive=max_inconclusive,
        )
