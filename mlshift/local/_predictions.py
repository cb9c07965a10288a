"""What the local versions predicted over a window: their ``/metrics`` counters, sampled.

Each ``model_server`` counts its predictions from the moment it started
(``mlshift.metrics.parse_exposition`` reads them). To answer "over the last ``since``" the
engine reads every version's ``/metrics`` every few seconds (``PREDICTION_INTERVAL_S``; the
counters change slowly and a read costs the server a render, so not every second) and appends
one JSON line per read to ``predictions.jsonl`` in the endpoint's state directory, bounded in
size like the Envoy samples. ``window`` then diffs, per version, the newest sample against the
newest one taken at or before the window's start, from the same process (a replaced process
started its counters again). With no such sample, the newest counters are taken as they are:
the version started inside the window, or nobody sampled before it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlshift._exceptions import MlshiftError
from mlshift._prediction_stats import PredictionStats, parse_exposition, stats_delta
from mlshift.local._files import EndpointFiles
from mlshift.local._ownership import ProcessRecord, alive
from mlshift.local._stats import append_line

__all__ = [
    "PREDICTION_INTERVAL_S",
    "PredictionSample",
    "PredictionStore",
    "read_samples",
    "server_metrics",
    "window",
]

log = logging.getLogger("mlshift.local")

PREDICTION_INTERVAL_S = 3.0
_MAX_BYTES = 2 * 1024 * 1024  # a few thousand reads: hours at one read every 3 s


@dataclass(frozen=True)
class PredictionSample:
    """One read of one version's cumulative prediction counters.

    Attributes:
        timestamp: when it was read, epoch seconds.
        pid: the process read (counters restart with a new process).
        stats: the counters.
    """

    timestamp: float
    pid: int
    stats: PredictionStats


def _bound(value: Any) -> float:
    return math.inf if value == "+Inf" else float(value)


class PredictionStore:
    """Prediction samples appended as JSON lines to ``path`` (several processes may append).

    Example:
        >>> store = PredictionStore(engine.root / "predictions.jsonl")  # doctest: +SKIP
        >>> store.read()[-1].stats.version  # doctest: +SKIP
        'v1'
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, samples: Iterable[PredictionSample]) -> None:
        """Append one read (one line; each version keeps its own timestamp and pid)."""
        items = [
            {
                "t": s.timestamp,
                "p": s.pid,
                "v": s.stats.version,
                "c": dict(s.stats.classes),
                # "+Inf" rather than JSON's non-standard Infinity.
                "b": [["+Inf" if math.isinf(b) else b, n] for b, n in s.stats.buckets],
                "s": s.stats.value_sum,
            }
            for s in samples
        ]
        if items:
            append_line(self.path, json.dumps(items), max_bytes=_MAX_BYTES)

    def read(self) -> list[PredictionSample]:
        """Return every sample kept, oldest first."""
        try:
            text = self.path.read_text()
        except OSError:
            return []
        out: list[PredictionSample] = []
        for line in text.splitlines():
            try:
                for item in json.loads(line):
                    stats = PredictionStats(
                        str(item["v"]),
                        {str(c): float(n) for c, n in item["c"].items()},
                        tuple((_bound(b), float(n)) for b, n in item["b"]),
                        float(item["s"]),
                    )
                    out.append(PredictionSample(float(item["t"]), int(item["p"]), stats))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a crash; the next ones are fine
        out.sort(key=lambda s: s.timestamp)
        return out


def window(
    samples: Iterable[PredictionSample], *, now: float, since: float
) -> list[PredictionStats]:
    """Per-version predictions over ``[now - since, now]``, from cumulative samples.

    A version's newest sample is diffed (``stats_delta``) against the newest sample of the
    same process taken at or before ``now - since``; without one, its counters since start
    are used. A version with no sample inside the window is left out.

    Example:
        >>> old = PredictionSample(0.0, 7, PredictionStats("v1", {"yes": 5}))
        >>> new = PredictionSample(60.0, 7, PredictionStats("v1", {"yes": 8}))
        >>> window([old, new], now=60.0, since=30.0)[0].classes
        {'yes': 3.0}
    """
    start = now - since
    by_version: dict[str, list[PredictionSample]] = {}
    for sample in sorted(samples, key=lambda s: s.timestamp):
        if sample.timestamp <= now:
            by_version.setdefault(sample.stats.version, []).append(sample)
    out: list[PredictionStats] = []
    for history in by_version.values():
        newest = history[-1]
        if newest.timestamp < start:
            continue
        baseline = next(
            (s for s in reversed(history) if s.timestamp <= start and s.pid == newest.pid),
            None,
        )
        out.append(newest.stats if baseline is None else stats_delta(newest.stats, baseline.stats))
    return out


def server_metrics(
    http: httpx.Client, files: EndpointFiles, versions: Sequence[str]
) -> dict[str, tuple[ProcessRecord, str]]:
    """Return the process record and ``/metrics`` text of each of ``versions`` that runs.

    A server that does not answer is left out. Not listening (a version still starting, or
    going away) is an expected state and logged at DEBUG; any other failure of a running
    server (an error status, a broken answer, a timeout) is a WARNING.
    """
    out: dict[str, tuple[ProcessRecord, str]] = {}
    for version in versions:
        record = files.record(version)
        if not alive(record) or record is None:
            continue
        try:
            response = http.get(f"http://127.0.0.1:{record.port}/metrics")
            response.raise_for_status()
        except httpx.ConnectError as exc:
            log.debug("cannot read /metrics of %s/%s yet: %s", files.root.name, version, exc)
            continue
        except httpx.HTTPError as exc:
            log.warning("cannot read /metrics of %s/%s: %s", files.root.name, version, exc)
            continue
        out[version] = (record, response.text)
    return out


def read_samples(
    model: str, texts: Mapping[str, tuple[ProcessRecord, str]]
) -> list[PredictionSample]:
    """Turn ``server_metrics``' answers into one sample per version (now, its pid)."""
    out: list[PredictionSample] = []
    for version, (record, text) in texts.items():
        try:
            stats = parse_exposition(text, model=model)
        except MlshiftError as exc:
            log.warning("cannot read the predictions of %s/%s: %s", model, version, exc)
            continue
        at = time.time()
        out += [PredictionSample(at, record.pid, s) for s in stats if s.version == version]
    return out
