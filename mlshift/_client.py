"""Requests to an endpoint from the notebook: one prediction, or paced background traffic.

``predict`` posts one batch through the router and reports which version answered (the
``x-mlshift-version`` header every model server sets). ``TrafficRun`` sends single-row
requests at a fixed rate from a background thread for a bounded time, so a notebook can
watch weights move while traffic flows; it always stops by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from mlshift._exceptions import InvalidArgumentError, InvalidDataError, MlshiftError

__all__ = ["TrafficRun", "encode_rows", "predict"]

log = logging.getLogger("mlshift.client")
VERSION_HEADER = "x-mlshift-version"


def encode_rows(data: Any) -> list[bytes]:
    """Return one KServe v1 request body per row of ``data`` (DataFrame, array or list)."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        cols = [str(c) for c in data.columns]
        return [
            _dumps({"dataframe_split": {"columns": cols, "data": [row]}})
            for row in data.itertuples(index=False, name=None)
        ]
    rows = np.asarray(data)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    return [_dumps({"instances": [row.tolist()]}) for row in rows]


def _dumps(payload: Any) -> bytes:
    """JSON of a request body; values JSON cannot carry raise ``InvalidDataError``."""
    try:
        return orjson.dumps(payload, default=_default)
    except orjson.JSONEncodeError as exc:
        # orjson hides what default= raised behind its own TypeError: surface our message.
        if isinstance(exc.__cause__, InvalidDataError):
            raise InvalidDataError(str(exc.__cause__)) from exc
        raise InvalidDataError(
            f"cannot send this data to a model server ({exc}); pass numbers, strings or"
            " booleans in a DataFrame, array or list"
        ) from exc


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise InvalidDataError(
        f"cannot send {type(value).__name__} values to a model server; convert the column to"
        " numbers, strings or booleans first (e.g. df[col].astype(str))"
    )


def _body(data: Any) -> bytes:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        split = {"columns": [str(c) for c in data.columns], "data": data.to_numpy().tolist()}
        return _dumps({"dataframe_split": split})
    rows = np.asarray(data)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    return _dumps({"instances": rows.tolist()})


def predict(url: str, model: str, data: Any, *, timeout: float = 30.0) -> Any:
    """Post ``data`` to ``url`` and return a DataFrame of predictions with the serving version.

    Example:
        >>> predict(ep.url, "churn", X[:3])  # doctest: +SKIP
           prediction version
        0           1       v1
    """
    import httpx
    import pandas as pd

    try:
        # trust_env=False: a notebook's HTTP_PROXY must not capture calls to the endpoint.
        response = httpx.post(
            f"{url}/v1/models/{model}:predict",
            content=_body(data),
            headers={"content-type": "application/json"},
            timeout=timeout,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise MlshiftError(
            f"could not reach the endpoint at {url}: {exc}; check ep.status() for down versions"
        ) from exc
    version = response.headers.get(VERSION_HEADER, "")
    if response.status_code >= 400:
        raise MlshiftError(
            f"the endpoint answered {response.status_code} (version {version or 'unknown'}):"
            f" {response.text[:500]}"
        )
    predictions = orjson.loads(response.content)["predictions"]
    frame = pd.DataFrame({"prediction": predictions})
    frame["version"] = version
    return frame


class TrafficRun:
    """Background single-row traffic at ``rps`` for ``duration`` seconds.

    ``results`` is a DataFrame (timestamp, version, status, latency_ms) of what was sent so
    far; ``wait()`` blocks until the run ends, ``stop()`` ends it early. At most
    ``concurrency`` requests are in flight: when the endpoint is too slow to keep up, sends
    are skipped (counted in ``skipped``) rather than queued, so the run ends on time.

    Example:
        >>> run = ep.send(X, rps=50, duration="30s")  # doctest: +SKIP
        >>> run.wait().results.version.value_counts()  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        model: str,
        data: Any,
        *,
        rps: float,
        duration: float,
        concurrency: int = 16,
        timeout: float = 10.0,
    ) -> None:
        if rps <= 0 or rps > 5000:
            raise InvalidArgumentError(f"rps must be within (0, 5000], got {rps!r}")
        if duration <= 0 or duration > 3600:
            raise InvalidArgumentError(f"duration must be within (0 s, 1 h], got {duration!r} s")
        self.url, self.model, self.rps, self.duration = url, model, float(rps), float(duration)
        self._bodies = encode_rows(data)
        if not self._bodies:
            raise InvalidArgumentError(
                "send() needs at least one row of data; pass a non-empty DataFrame, array or list"
            )
        self._records: list[tuple[float, str, int, float]] = []
        self.skipped = 0
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timeout = timeout
        self._concurrency = concurrency
        self._thread = threading.Thread(target=self._run, name="mlshift-send", daemon=True)
        self._thread.start()

    def _one(self, client: Any, body: bytes) -> None:
        import httpx

        start = time.time()
        t0 = time.perf_counter()
        try:
            r = client.post(
                f"{self.url}/v1/models/{self.model}:predict",
                content=body,
                headers={"content-type": "application/json"},
            )
            status, version = r.status_code, r.headers.get(VERSION_HEADER, "")
        except httpx.HTTPError as exc:
            log.debug("request failed: %s", exc)
            status, version = 0, ""
        finally:
            self._slots.release()
        record = (start, version, status, (time.perf_counter() - t0) * 1000.0)
        with self._lock:
            self._records.append(record)

    def _run(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self._concurrency)
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="mlshift-send")
        with httpx.Client(timeout=self._timeout, limits=limits, trust_env=False) as client:
            start = time.perf_counter()
            due_so_far = 0
            while not self._stop.is_set():
                elapsed = time.perf_counter() - start
                if elapsed >= self.duration:
                    break
                due = int(elapsed * self.rps) + 1
                for _ in range(due - due_so_far):
                    if self._slots.acquire(blocking=False):
                        body = self._bodies[due_so_far % len(self._bodies)]
                        pool.submit(self._one, client, body)
                    else:
                        self.skipped += 1
                    due_so_far += 1
                self._stop.wait(min(0.005, 1.0 / self.rps))
            pool.shutdown(wait=True, cancel_futures=True)
        if self.skipped:
            log.warning(
                "traffic run to %s: %d of %d sends skipped, the endpoint could not keep up with"
                " %g rps at %d in flight",
                self.url,
                self.skipped,
                due_so_far,
                self.rps,
                self._concurrency,
            )
        log.info("traffic run to %s done: %d requests", self.url, due_so_far - self.skipped)

    @property
    def running(self) -> bool:
        """True while requests are still being sent."""
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> TrafficRun:
        """Block until the run ends (or ``timeout`` seconds pass) and return the run."""
        self._thread.join(timeout)
        return self

    def stop(self) -> TrafficRun:
        """End the run early; requests already in flight finish."""
        self._stop.set()
        self._thread.join()
        return self

    @property
    def results(self) -> Any:
        """What was sent so far: timestamp (UTC), version, status (0: no answer), latency_ms."""
        import pandas as pd

        with self._lock:
            rows = list(self._records)
        frame = pd.DataFrame(rows, columns=["timestamp", "version", "status", "latency_ms"])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
        return frame.sort_values("timestamp", ignore_index=True)

    def summary(self) -> Any:
        """Per version: requests, share, errors (non-2xx), p50/p99 latency in ms."""
        frame = self.results
        if frame.empty:
            return frame
        grouped = frame.groupby("version")
        out = grouped.agg(
            requests=("status", "size"),
            errors=("status", lambda s: int(((s < 200) | (s >= 300)).sum())),
            p50_ms=("latency_ms", lambda s: float(s.quantile(0.5))),
            p99_ms=("latency_ms", lambda s: float(s.quantile(0.99))),
        )
        out.insert(1, "share", out["requests"] / out["requests"].sum())
        return out

    def __repr__(self) -> str:
        state = "running" if self.running else "done"
        return f"<TrafficRun {self.rps:g} rps for {self.duration:g}s to {self.url} ({state})>"
