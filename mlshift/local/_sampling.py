"""What the local mesh measures: Envoy's per-version stats and the servers' prediction counters.

``MeshSampling`` owns an endpoint's two sample files (``metrics.jsonl`` from Envoy's
``/stats/prometheus``, ``predictions.jsonl`` from each model server's ``/metrics``), the
daemon thread that samples them while a Python process is attached, and the two reads the
engine answers with: the metrics frame (``mlshift._frame``) and prediction counters over a
window (``mlshift._prediction_stats``). Parsing and storage are in ``_stats`` and
``_predictions``; this module only decides when to sample and what to read back.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from mlshift._exceptions import MlshiftError
from mlshift._frame import Snapshot, frame_from_counters
from mlshift._histogram import histograms_from_counters
from mlshift.local import _xds as xds
from mlshift.local._files import EndpointFiles, read_json
from mlshift.local._predictions import (
    PREDICTION_INTERVAL_S,
    PredictionStore,
    read_samples,
    server_metrics,
    window,
)
from mlshift.local._stats import (
    Sampler,
    SampleStore,
    parse_health,
    parse_prometheus,
    stats_filter,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._histogram import LatencyHistogram
    from mlshift._prediction_stats import PredictionStats
    from mlshift._state import EndpointState
    from mlshift.local._envoy import Router

__all__ = ["HEALTH_MAX_AGE_S", "MeshSampling"]

HEALTH_MAX_AGE_S = 1.5
"""How old the thread's read of Envoy's health checks may be for a shift to go by it: one
sampling interval and a half (Envoy itself takes two failed checks, half a second apart, to
take a version out)."""


class MeshSampling:
    """Samples one endpoint's Envoy stats every second and its predictions every few seconds.

    Args:
        name: the endpoint.
        files: the endpoint's state directory.
        router: returns the endpoint's Envoy (created lazily by the engine). The thread holds
            this, so it must not keep the engine alive (the engine passes a weak reference).
        http: the client used to read the model servers' ``/metrics``.

    Example:
        >>> sampling = MeshSampling("churn", files, lambda: router, client)  # doctest: +SKIP
        >>> sampling.metrics(state, since=120.0, step=10.0)  # doctest: +SKIP
    """

    def __init__(
        self, name: str, files: EndpointFiles, router: Callable[[], Router], http: httpx.Client
    ) -> None:
        self.name = name
        self.files = files
        self._router = router
        self._http = http
        self.samples = SampleStore(files.root / "metrics.jsonl")
        self.prediction_samples = PredictionStore(files.root / "predictions.jsonl")
        self._predictions_due = 0.0
        self._thread = Sampler(self._tick, interval_s=1.0)
        self._ticking: int | None = None  # the sampler thread's ident, once it ran
        # Envoy's health check per version as last read, and when that read began.
        self._health: tuple[float, dict[str, bool]] = (-math.inf, {})

    @property
    def running(self) -> bool:
        """Whether the sampling thread runs."""
        return self._thread.running

    def on_sampler_thread(self) -> bool:
        """Whether the caller is this sampler's own thread (which cannot wait for itself)."""
        return self._thread.running and threading.get_ident() == self._ticking

    def start(self) -> None:
        """Start the sampling thread (no-op while it runs)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread."""
        self._thread.stop()

    def poke(self) -> None:
        """Have the thread read Envoy's stats now (after a change; this call does not wait)."""
        self._thread.poke()

    def sample(self) -> None:
        """Read Envoy's per-version stats once and append them to the sample store."""
        router = self._router()
        if not router.running():
            return
        data = read_json(self.files.root / "state.json")
        if not data:
            return
        versions = [str(v["name"]) for v in data["state"].get("versions") or ()]
        if not versions:
            return
        clusters = {xds.cluster_name(self.name, v): v for v in versions}
        started = time.monotonic()
        text = router.get("/stats/prometheus", filter=stats_filter(clusters)).text
        self.samples.append(parse_prometheus(text, clusters, timestamp=time.time()))
        self._health = (started, parse_health(text, clusters))

    def health(self, *, max_age_s: float = HEALTH_MAX_AGE_S) -> dict[str, bool]:
        """Return {version: healthy?} as Envoy's health checks were last read (every second
        while the thread runs), or {} when that read began more than ``max_age_s`` ago.

        Example:
            >>> sampling.health()  # doctest: +SKIP
            {'v1': True, 'v2': True}
        """
        started, health = self._health
        return dict(health) if time.monotonic() - started <= max_age_s else {}

    def sample_predictions(self) -> None:
        """Read every running version's prediction counters once and store them."""
        versions = [p.stem for p in sorted(self.files.run_dir.glob("*.json"))]
        texts = server_metrics(self._http, self.files, versions)
        self.prediction_samples.append(read_samples(self.name, texts))

    def _tick(self) -> None:
        """The thread's work: Envoy's stats every tick, predictions every few seconds."""
        self._ticking = threading.get_ident()
        due = time.monotonic() >= self._predictions_due
        try:
            self.sample()
        finally:
            if due:
                self._predictions_due = time.monotonic() + PREDICTION_INTERVAL_S
                self.sample_predictions()

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        """Return the per-version frame over the last ``since`` seconds at ``step`` resolution.

        Envoy's counters are cumulative, and are read as such (``frame_from_counters``): the
        requests of the window add up to what the router answered in it, whatever the step,
        including traffic sent while no Python process was sampling. A read is taken now, and
        every second while a process is attached.
        """
        snaps, start, end = self._window(state, since)
        return frame_from_counters(snaps, start=start, end=end, step=min(step, since))

    def checkpoint(self) -> float:
        """Read Envoy's counters now and return the time just after the read: a window from
        it counts from this read, not from the thread's read up to a second earlier (which
        would count traffic from before, under the previous weights).

        Example:
            >>> start = sampling.checkpoint()  # doctest: +SKIP
        """
        with contextlib.suppress(MlshiftError):
            self.sample()
        return time.time()

    def latency_histograms(
        self, state: EndpointState, *, since: float
    ) -> dict[str, LatencyHistogram]:
        """Return each version's ``upstream_rq_time`` histogram over the last ``since``
        seconds, read (like ``metrics``) as cumulative counters, with a read taken now.
        Envoy merges histograms at each stats flush (1 s): the newest second may be missing."""
        snaps, start, end = self._window(state, since)
        return histograms_from_counters(snaps, start=start, end=end)

    def _window(self, state: EndpointState, since: float) -> tuple[list[Snapshot], float, float]:
        """A read now, then the state's versions' reads over the last ``since`` seconds (with
        each one's last read before them), and the window's start and end."""
        with contextlib.suppress(MlshiftError):
            self.sample()
        end = time.time()
        start = end - since
        versions = set(state.version_names)
        snaps = [s for s in self.samples.read(since=start, before=True) if s.version in versions]
        return snaps, start, end

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        """Return each version's predictions over the last ``since`` seconds.

        Diffs the servers' counters as sampled every few seconds (and once now); a version
        with no sample from before the window counts since its process started.
        """
        self.sample_predictions()
        samples = self.prediction_samples.read()
        found = {s.version: s for s in window(samples, now=time.time(), since=since)}
        return [found[v] for v in state.version_names if v in found]
