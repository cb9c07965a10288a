"""The request journal: the last N inference requests, with their id, input digest and answer.

Shadow traffic is only useful if someone can see what the shadow answered. Every inference
request is recorded in a bounded ring buffer (``MLSHIFT_JOURNAL_SIZE`` entries, 10,000 by
default, 0 turns it off) with Envoy's ``x-request-id``, which a mirrored copy keeps, so the
primary's and the shadow's answers to the same request can be joined. The journal is read
at ``GET /v2/models/{m}/journal?since=<epoch seconds>&limit=<n>``: JSON
``{"model", "version", "entries": [{"id", "time", "status", "latency_ms", "digest",
"prediction"}, ...]}``, oldest first. Only the first ``_MAX_VALUES`` predicted values of a
request are kept, so memory stays bounded whatever the batch size.
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


def _values(outputs: Mapping[str, Any]) -> list[Any]:
    """The predicted values of one request: ``predict``'s when asked, else the first output's."""
    array = outputs.get("predict", next(iter(outputs.values()), None))
    if array is None:
        return []
    values = np.asarray(array)[:_MAX_VALUES]
    return values.tolist() if values.ndim else [values.item()]


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
        self.entries: deque[dict[str, Any]] = deque(maxlen=max(size, 1))

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
        """Remember an answered request's body and outputs until it is recorded (the digest
        and values are taken then, after the answer went out: off the request's latency)."""
        if self.size:
            scope[_KEY] = (body, outputs)

    def record(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        """Append one finished inference request (status and latency; the noted answer)."""
        if not self.size:
            return
        request_id = ""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
                break
        noted = scope.pop(_KEY, None)
        digest = hashlib.sha256(noted[0]).hexdigest()[:16] if noted else ""
        prediction = _values(noted[1]) if noted else None
        self.entries.append(
            {
                "id": request_id,
                "time": time.time(),
                "status": status,
                "latency_ms": seconds * 1000.0,
                "digest": digest,
                "prediction": prediction,
            }
        )

    def read(self, query_string: bytes) -> dict[str, Any]:
        """The entries at or after ``since`` (epoch seconds), at most the newest ``limit``."""
        query = parse_qs(query_string.decode("latin-1"))
        try:
            since = float(query.get("since", ["0"])[0])
            limit = int(query.get("limit", [str(self.size)])[0])
        except ValueError as exc:
            raise ValueError(f"since must be epoch seconds and limit a count: {exc}") from exc
        entries = [e for e in list(self.entries) if e["time"] >= since]
        return {"size": self.size, "entries": entries[-limit:] if limit > 0 else []}
