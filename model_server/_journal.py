"""The request journal: the last N inference requests, with their id, input digest and answer.

Shadow traffic is only useful if someone can see what the shadow answered. Every inference
request is recorded in a bounded ring buffer (``MLSHIFT_JOURNAL_SIZE`` entries, 10,000 by
default, 0 turns it off) with Envoy's ``x-request-id``, which a mirrored copy keeps, so the
primary's and the shadow's answers to the same request can be joined. The journal is read
at ``GET /v2/models/{m}/journal?since=<epoch seconds>&limit=<n>``: JSON
``{"model", "version", "entries": [{"id", "time", "status", "latency_ms", "digest",
"prediction"}, ...]}``, oldest first. Only the first ``_MAX_VALUES`` predicted values of a
request are kept, so memory stays bounded whatever the batch size.

Recording runs on the event loop after every answer, so it does as little as it can there: the
request id, the time, and references to the body and the predicted values. Hashing the body and
turning values into JSON happen when the journal is read, for the entries read (a reader asks
for a window); a body over ``_KEEP_BODY`` bytes is hashed at once rather than kept, and values
that would pin a large batch's output are copied. Entries are plain tuples of bytes, numbers and
arrays, none of which the garbage collector tracks, so a full journal adds nothing to its walks.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np

__all__ = ["Journal"]

_KEY = "mlshift.journal"
_MAX_VALUES = 64
_KEEP_BODY = 4096
"""Bodies up to this size are kept and hashed when read; larger ones are hashed at once."""
_PIN_BYTES = 64 * 1024
"""Kept values that view a larger array (a big batch's output) are copied, not kept as a view."""

# An entry: (id, time, status, seconds, body or digest, values or None). A plain tuple: the
# collector untracks exact tuples of untracked values, not NamedTuples.
_Entry = tuple[bytes, float, int, float, "bytes | str", "np.ndarray[Any, Any] | None"]


def _values(outputs: Mapping[str, Any]) -> np.ndarray[Any, Any] | None:
    """The predicted values of one request: ``predict``'s when asked, else the first output's."""
    array = outputs.get("predict")
    if array is None:
        array = next(iter(outputs.values()), None)
        if array is None:
            return None
    values = np.asarray(array)[:_MAX_VALUES]
    base = values.base
    if isinstance(base, np.ndarray) and base.nbytes > _PIN_BYTES:
        values = values.copy()
    return values


def _as_json(entry: _Entry) -> dict[str, Any]:
    request_id, at, status, seconds, body, values = entry
    prediction = None
    if values is not None:
        prediction = values.tolist() if values.ndim else [values.item()]
    return {
        "id": request_id.decode("latin-1"),
        "time": at,
        "status": status,
        "latency_ms": seconds * 1000.0,
        "digest": _digest(body) if isinstance(body, bytes) else body,
        "prediction": prediction,
    }


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16] if body else ""


class Journal:
    """A ring buffer of inference requests.

    Example:
        >>> journal = Journal(size=2)
        >>> scope = {"headers": [(b"x-request-id", b"abc")]}
        >>> journal.note(scope, b'{"inputs": []}', {"predict": np.array([1, 0])})
        >>> journal.record(scope, 200, 0.004)
        >>> journal.read(b"")["entries"][0]["prediction"]
        [1, 0]
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.entries: deque[_Entry] = deque(maxlen=max(size, 1))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Journal:
        """The journal sized by ``MLSHIFT_JOURNAL_SIZE`` (10,000; 0 records nothing)."""
        raw = env.get("MLSHIFT_JOURNAL_SIZE", "10000")
        if not raw.isdigit():
            raise ValueError(f"MLSHIFT_JOURNAL_SIZE must be a count, got {raw!r}")
        return cls(int(raw))

    def note(
        self, scope: MutableMapping[str, Any], body: bytes, outputs: Mapping[str, Any]
    ) -> None:
        """Remember an answered request's body and outputs until it is recorded (after the
        answer went out: off the request's latency)."""
        if self.size:
            scope[_KEY] = (body, outputs)

    def record(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        """Append one finished inference request (status and latency; the noted answer)."""
        if not self.size:
            return
        request_id = b""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                request_id = value
                break
        noted = scope.pop(_KEY, None)
        body: bytes | str = b""
        values = None
        if noted is not None:
            raw, outputs = noted
            body = _digest(raw) if len(raw) > _KEEP_BODY else raw
            values = _values(outputs)
        self.entries.append((request_id, time.time(), status, seconds, body, values))

    def read(self, query_string: bytes) -> dict[str, Any]:
        """The entries at or after ``since`` (epoch seconds), at most the newest ``limit``."""
        query = parse_qs(query_string.decode("latin-1"))
        try:
            since = float(query.get("since", ["0"])[0])
            limit = int(query.get("limit", [str(self.size)])[0])
        except ValueError as exc:
            raise ValueError(f"since must be epoch seconds and limit a count: {exc}") from exc
        entries = [e for e in list(self.entries) if e[1] >= since]  # e[1]: time
        return {
            "size": self.size,
            "entries": [_as_json(e) for e in entries[-limit:]] if limit > 0 else [],
        }
