"""Requests to an endpoint from the notebook: one prediction, or paced background traffic.

``predict`` posts one batch through the router and reports which version answered (the
``x-mlshift-version`` header every model server sets). ``TrafficRun`` sends single-row
requests at a fixed rate from a background thread for a bounded time, so a notebook can
watch weights move while traffic flows; it always stops by itself.

Rows go out as the user has them: a DataFrame column by column in its own dtype (ints stay
ints, floats floats, booleans, strings; missing values become null), a list of dicts as rows
with those columns, lists as they are, arrays through numpy. ``method="predict_proba"`` asks
the server for class probabilities (``"parameters": {"method": ...}`` in the KServe v1 body).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from mlshift._exceptions import InvalidArgumentError, InvalidDataError, MlshiftError

__all__ = ["METHODS", "TrafficRun", "encode_rows", "predict"]

log = logging.getLogger("mlshift.client")
VERSION_HEADER = "x-mlshift-version"
METHODS = ("predict", "predict_proba")
"""What ``method=`` may ask of a version's model (the model server's methods)."""

Rows = tuple[list[str] | None, list[Any]]
"""Column names (None: positional instances) and the rows, each a list of plain values."""


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InvalidArgumentError(
            f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}"
        )
    return method


def _is_rows(value: Any) -> bool:
    import numpy as np
    import pandas as pd

    return isinstance(value, list | tuple | np.ndarray | pd.Series)


def _records(records: list[Mapping[Any, Any]]) -> Rows:
    """Rows of dicts as a table: the keys in first-seen order, a missing key as null."""
    keys: dict[Any, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return [str(k) for k in keys], [[r.get(k) for k in keys] for r in records]


def _frame_rows(frame: Any) -> Rows:
    """A DataFrame's rows, each column in its own dtype (``tolist`` gives Python scalars)."""
    columns = [frame.iloc[:, j].tolist() for j in range(frame.shape[1])]
    return [str(c) for c in frame.columns], [list(row) for row in zip(*columns, strict=True)]


def _rows(data: Any) -> Rows:
    """Turn what a user passes (DataFrame, dict, list of dicts, lists, array) into rows."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return _frame_rows(data)
    if isinstance(data, Mapping):
        if data and all(_is_rows(v) for v in data.values()):  # columns: {"a": [1, 2], ...}
            return _frame_rows(pd.DataFrame(dict(data)))
        return _records([data])  # one row: {"a": 1, ...}
    if isinstance(data, list | tuple) and data:
        if all(isinstance(r, Mapping) for r in data):
            return _records(list(data))
        if any(isinstance(r, Mapping) for r in data):
            raise InvalidDataError(
                "rows mix dicts and other values; pass a list of dicts (one per row), a list"
                " of lists or a DataFrame"
            )
        if all(_is_rows(r) for r in data):  # rows as given: no upcast of ints to floats
            return None, [r.tolist() if hasattr(r, "tolist") else list(r) for r in data]
        if not any(_is_rows(r) for r in data):
            return None, [list(data)]  # one row of values
    rows = np.asarray(data)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    return None, rows.tolist()


def _request(columns: list[str] | None, rows: list[Any], method: str) -> dict[str, Any]:
    doc: dict[str, Any] = (
        {"instances": rows}
        if columns is None
        else {"dataframe_split": {"columns": columns, "data": rows}}
    )
    if method != "predict":  # the server's default; older servers know no parameters
        doc["parameters"] = {"method": method}
    return doc


def encode_rows(data: Any, *, method: str = "predict") -> list[bytes]:
    """Return one KServe v1 request body per row of ``data`` (see ``predict`` for the forms).

    Example:
        >>> encode_rows([{"tenure": 3, "plan": "pro"}])
        [b'{"dataframe_split":{"columns":["tenure","plan"],"data":[[3,"pro"]]}}']
    """
    _check_method(method)
    columns, rows = _rows(data)
    return [_dumps(_request(columns, [row], method)) for row in rows]


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
    """What orjson cannot write itself: numpy scalars, pandas' missing values, timestamps."""
    import numpy as np
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime.date):  # pandas Timestamps (a datetime subclass) too
        return value.isoformat()
    raise InvalidDataError(
        f"cannot send {type(value).__name__} values to a model server; convert the column to"
        " numbers, strings or booleans first (e.g. df[col].astype(str))"
    )


def _body(data: Any, method: str = "predict") -> bytes:
    columns, rows = _rows(data)
    return _dumps(_request(columns, rows, method))


def predict(
    url: str, model: str, data: Any, *, method: str = "predict", timeout: float = 30.0
) -> Any:
    """Post ``data`` to ``url`` and return a DataFrame of predictions with the serving version.

    ``data`` is a DataFrame (sent column by column in its own dtypes), a list of dicts (one
    per row), a dict (one row, or columns of lists), a list of rows or an array. With
    ``method="predict"`` the frame has ``prediction`` and ``version``; with
    ``method="predict_proba"`` one column per class and ``version``. The class columns are
    named by the class labels when the answering version announces them (``classes`` in the
    answer, or ``parameters.classes`` in its model metadata ``GET /v2/models/{m}/versions/
    {v}``); otherwise they are ``0 .. k-1``, in the model's class order (``classes_``).

    Example:
        >>> predict(ep.url, "churn", X[:3])  # doctest: +SKIP
           prediction version
        0           1       v1
        >>> predict(ep.url, "churn", X[:1], method="predict_proba")  # doctest: +SKIP
              0     1 version
        0  0.91  0.09      v1
    """
    import httpx
    import pandas as pd

    body = _body(data, _check_method(method))
    try:
        # trust_env=False: a notebook's HTTP_PROXY must not capture calls to the endpoint.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(
                f"{url}/v1/models/{model}:predict",
                content=body,
                headers={"content-type": "application/json"},
            )
            version = response.headers.get(VERSION_HEADER, "")
            if response.status_code >= 400:
                raise MlshiftError(
                    f"the endpoint answered {response.status_code} (version"
                    f" {version or 'unknown'}): {response.text[:500]}"
                )
            doc = _answer(response.content, version)
            if method == "predict":
                frame = pd.DataFrame({"prediction": doc["predictions"]})
            else:
                frame = _proba_frame(doc["predictions"], version)
                classes = _classes(doc) or _version_classes(client, url, model, version)
                if classes is not None and len(classes) == frame.shape[1]:
                    frame.columns = pd.Index(classes)
    except httpx.HTTPError as exc:
        raise MlshiftError(
            f"could not reach the endpoint at {url}: {exc}; check ep.status() for down versions"
        ) from exc
    frame["version"] = version
    return frame


def _answer(content: bytes, version: str) -> dict[str, Any]:
    """A v1 answer, checked to hold a list of ``predictions``."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise MlshiftError(
            f"version {version or 'unknown'} answered something that is not JSON: {exc}"
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("predictions"), list):
        raise MlshiftError(
            f"version {version or 'unknown'} answered without a list of predictions:"
            f" {content[:200]!r}"
        )
    return doc


def _proba_frame(rows: list[Any], version: str) -> Any:
    """One column per class from a ``predict_proba`` answer: ``0 .. k-1``, the model's order."""
    import pandas as pd

    if not all(isinstance(r, list) for r in rows):
        raise MlshiftError(
            f"version {version or 'unknown'} answered predictions, not class probabilities: its"
            " model server ignores method='predict_proba' (an older model_server); deploy the"
            " version again with this mlshift"
        )
    return pd.DataFrame(rows, columns=range(len(rows[0])) if rows else None)


def _classes(doc: Any) -> list[Any] | None:
    """Class labels a response or model metadata carries (``classes``, or in ``parameters``)."""
    if not isinstance(doc, dict):
        return None
    for holder in (doc, doc.get("parameters")):
        if isinstance(holder, dict) and isinstance(holder.get("classes"), list):
            return list(holder["classes"])
    for output in doc.get("outputs") or []:
        if isinstance(output, dict) and output.get("name") == "predict_proba":
            found = _classes(output)
            if found is not None:
                return found
    return None


def _version_classes(client: Any, url: str, model: str, version: str) -> list[Any] | None:
    """The classes in the model metadata of ``version`` (pinned: another version may differ)."""
    import httpx

    if not version:
        return None
    try:
        response = client.get(f"{url}/v2/models/{model}/versions/{version}")
        return _classes(orjson.loads(response.content)) if response.status_code == 200 else None
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        log.debug("no model metadata from %s version %s: %s", url, version, exc)
        return None


class TrafficRun:
    """Background single-row traffic at ``rps`` for ``duration`` seconds.

    ``results`` is a DataFrame (timestamp, version, status, latency_ms) of what was sent so
    far; ``wait()`` blocks until the run ends, ``stop()`` ends it early. At most
    ``concurrency`` requests are in flight: when the endpoint is too slow to keep up, sends
    are skipped (counted in ``skipped``) rather than queued, so the run ends on time.
    ``method`` is what each request asks of the model (``"predict"`` or ``"predict_proba"``).

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
        method: str = "predict",
    ) -> None:
        if rps <= 0 or rps > 5000:
            raise InvalidArgumentError(f"rps must be within (0, 5000], got {rps!r}")
        if duration <= 0 or duration > 3600:
            raise InvalidArgumentError(f"duration must be within (0 s, 1 h], got {duration!r} s")
        self.url, self.model, self.rps, self.duration = url, model, float(rps), float(duration)
        self._bodies = encode_rows(data, method=method)
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
