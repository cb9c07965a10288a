"""Per-version metrics of the local mesh: Envoy's cluster stats, sampled into a time series.

Envoy counts, per cluster (one per version), the responses by class (``upstream_rq_2xx`` ...
``upstream_rq_5xx``, including the 503s it makes itself when a version is down) and keeps an
``upstream_rq_time`` histogram with the buckets set in the bootstrap. Those are cumulative:
``read_snapshots`` turns one read of ``/stats/prometheus`` into a ``Snapshot`` per version, and
``SampleStore`` appends such reads as JSON lines to a file in the endpoint's state directory, so
``ep.metrics(since=...)`` can diff them into the frame of ``mlshift.metrics``. A daemon
``Sampler`` thread samples every second while a Python process is attached; each
``metrics()`` call also samples once, so the newest interval is never missing. Counters are
live but Envoy merges histograms only at each stats flush (1 s, set in the bootstrap), so an
interval's latencies may trail its counts by up to a second (NaN quantiles, never wrong ones).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlshift._exceptions import MetricsUnavailableError
from mlshift._frame import Snapshot

__all__ = [
    "SampleStore",
    "Sampler",
    "append_line",
    "parse_health",
    "parse_prometheus",
    "stats_filter",
]

log = logging.getLogger("mlshift.local")

_MAX_BYTES = 4 * 1024 * 1024


def stats_filter(clusters: Iterable[str]) -> str:
    """Return the admin ``filter`` regex that selects the stats ``parse_prometheus`` and
    ``parse_health`` need.

    Example:
        >>> stats_filter(["churn_v1"])
        '^cluster\\\\.(churn_v1)\\\\.(upstream_rq_[1-5]xx|upstream_rq_time|membership_healthy)$'
    """
    names = "|".join(re.escape(c) for c in clusters)
    return rf"^cluster\.({names})\.(upstream_rq_[1-5]xx|upstream_rq_time|membership_healthy)$"


_HEALTHY = re.compile(
    r'^envoy_cluster_membership_healthy\{envoy_cluster_name="([^"]+)"\} (\S+)$', re.MULTILINE
)


def parse_health(text: str, clusters: Mapping[str, str]) -> dict[str, bool]:
    """Return {version: healthy?} from ``/stats/prometheus`` text (Envoy's health checks).

    Healthy means Envoy's active health check of the version's host passes, so Envoy routes
    to it (``membership_healthy``); a version whose cluster is not in the text is left out.

    Example:
        >>> text = 'envoy_cluster_membership_healthy{envoy_cluster_name="churn_v1"} 1'
        >>> parse_health(text, {"churn_v1": "v1", "churn_v2": "v2"})
        {'v1': True}
    """
    out: dict[str, bool] = {}
    for cluster, value in _HEALTHY.findall(text):
        version = clusters.get(cluster)
        if version is not None:
            out[version] = float(value) > 0
    return out


def parse_prometheus(text: str, clusters: Mapping[str, str], *, timestamp: float) -> list[Snapshot]:
    """Turn Envoy's ``/stats/prometheus`` text into one ``Snapshot`` per version.

    Requests are ``envoy_cluster_upstream_rq_xx`` summed over response classes, errors its
    class ``5``, and buckets the ``le`` samples of the ``envoy_cluster_upstream_rq_time``
    histogram. Other stats and clusters not in ``clusters`` are skipped.

    Args:
        text: the exposition text (only the samples of the upstream_rq stats are read).
        clusters: ``{cluster name: version}``; versions with no sample yet get zero counts.
        timestamp: when the text was read, epoch seconds.

    Raises:
        MetricsUnavailableError: the text is not a Prometheus exposition.

    Example:
        >>> text = 'envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",' \\
        ...        'envoy_cluster_name="churn_v1"} 3'
        >>> parse_prometheus(text, {"churn_v1": "v1"}, timestamp=0.0)[0].errors
        3.0
    """
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        # The parser is lazy: malformed text raises while iterating, not when called.
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                version = clusters.get(sample.labels.get("envoy_cluster_name", ""))
                if version is None:
                    continue
                value = float(sample.value)
                # By family: under "# TYPE ... counter" the parser renames samples to ..._total.
                if family.name == "envoy_cluster_upstream_rq_xx":
                    requests[version] += value
                    if sample.labels.get("envoy_response_code_class") == "5":
                        errors[version] += value
                elif sample.name == "envoy_cluster_upstream_rq_time_bucket":
                    # float() reads Prometheus's "+Inf" as math.inf.
                    buckets[version].append((float(sample.labels["le"]), value))
    except (ValueError, KeyError) as exc:
        raise MetricsUnavailableError(
            f"Envoy's /stats/prometheus answer is not a Prometheus exposition"
            f" ({type(exc).__name__}: {exc}); check that nothing else took the router's admin"
            " port and read its log (envoy/envoy.log in the endpoint's state directory)"
        ) from exc
    return [
        Snapshot(
            timestamp,
            version,
            requests=requests[version],
            errors=errors[version],
            buckets=tuple(sorted(buckets[version])),
        )
        for version in clusters.values()
    ]


def append_line(path: Path, line: str, *, max_bytes: int) -> None:
    """Append one line to ``path``; past ``max_bytes``, keep only the newer half of the lines.

    Example:
        >>> append_line(Path("/tmp/samples.jsonl"), '{"t": 0}', max_bytes=1 << 20)  # doctest: +SKIP
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() of one line to an O_APPEND file: lines of two processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        if path.stat().st_size > max_bytes:
            lines = path.read_text().splitlines(keepends=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(lines[len(lines) // 2 :]))
            os.replace(tmp, path)


class SampleStore:
    """Snapshots appended as JSON lines to ``path`` (several processes may append)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, snaps: Iterable[Snapshot]) -> None:
        """Append one read (all versions, one timestamp) as one line."""
        items = list(snaps)
        if not items:
            return
        line = json.dumps(
            {
                "t": items[0].timestamp,
                "v": {
                    s.version: [s.requests, s.errors, [list(b) for b in s.buckets]] for s in items
                },
            }
        )
        append_line(self.path, line, max_bytes=_MAX_BYTES)

    def read(self, *, since: float = 0.0, before: bool = False) -> list[Snapshot]:
        """Return the snapshots taken at or after ``since`` (epoch seconds).

        With ``before=True`` each version's last snapshot before ``since`` comes too, so the
        counters' increase over a window can be told from its very start.
        """
        out: list[Snapshot] = []
        last: dict[str, Snapshot] = {}
        try:
            text = self.path.read_text()
        except OSError:
            return out
        for line in text.splitlines():
            try:
                data: dict[str, Any] = json.loads(line)
                t = float(data["t"])
                for version, (req, err, bks) in data["v"].items():
                    snap = Snapshot(t, version, req, err, tuple((b, c) for b, c in bks))
                    if t >= since:
                        out.append(snap)
                    elif before:
                        last[version] = snap
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash; the next ones are fine
        return [*last.values(), *out]

    def clear(self) -> None:
        """Forget every sample."""
        self.path.unlink(missing_ok=True)


class Sampler:
    """A daemon thread that calls ``sample`` every ``interval_s`` until stopped.

    Example:
        >>> sampler = Sampler(engine.sample, interval_s=1.0)  # doctest: +SKIP
        >>> sampler.start(); ...; sampler.stop()  # doctest: +SKIP
    """

    def __init__(self, sample: Callable[[], object], *, interval_s: float = 1.0) -> None:
        self._sample = sample
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling (no-op when already running)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mlshift-sampler", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Sample as soon as possible (after a change), without waiting for it here."""
        self._wake.set()

    def stop(self) -> None:
        """Stop sampling and wait for the thread to end."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._thread = None

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as exc:  # a sampler must outlive a router restart
                log.debug("metrics sample failed: %s", exc)
            next_at = max(next_at + self._interval_s, time.monotonic())
            if self._wake.wait(max(0.0, next_at - time.monotonic())):
                self._wake.clear()  # poked (or stopping): sample now
