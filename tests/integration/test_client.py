"""``ep.predict`` / ``ep.send`` request code against real loopback HTTP servers.

A deliberately slow server checks that background traffic never queues more than
``concurrency`` requests (it skips instead), so a run against a struggling endpoint still
ends when its duration is up; a normal server checks pacing, bodies and version reporting.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from mlshift import MlshiftError
from mlshift._client import TrafficRun, predict


class _Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.0
    bodies: list[dict[str, object]] = []  # noqa: RUF012 (shared on purpose: the test reads it)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        time.sleep(self.delay)
        rows = body.get("instances") or body["dataframe_split"]["data"]
        out = json.dumps({"predictions": [len(r) for r in rows]}).encode()
        self.send_response(500 if self.path.startswith("/v1/models/broken") else 200)
        self.send_header("x-mlshift-version", "v7")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _serve(delay: float) -> Iterator[str]:
    handler = type("H", (_Handler,), {"delay": delay, "bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_url() -> Iterator[str]:
    yield from _serve(0.0)


@pytest.fixture
def slow_url() -> Iterator[str]:
    yield from _serve(0.5)


def test_predict_reports_the_version_and_sends_dataframes_split(fast_url: str) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    out = predict(fast_url, "churn", frame)
    assert list(out["prediction"]) == [2, 2]
    assert set(out["version"]) == {"v7"}
    with pytest.raises(MlshiftError, match="answered 500 \\(version v7\\)"):
        predict(fast_url, "broken", frame)
    with pytest.raises(MlshiftError, match="could not reach"):
        predict("http://127.0.0.1:9", "churn", frame, timeout=1)


def test_send_paces_requests_one_row_each(fast_url: str) -> None:
    run = TrafficRun(fast_url, "churn", np.ones((7, 3)), rps=100, duration=1.0).wait(10)
    assert not run.running
    results = run.results
    assert 80 <= len(results) <= 110
    assert set(results["status"]) == {200}
    assert run.summary().loc["v7", "requests"] == len(results)
    assert run.skipped == 0


def test_a_slow_endpoint_gets_skipped_sends_not_a_queue(slow_url: str) -> None:
    run = TrafficRun(slow_url, "churn", np.ones((3, 2)), rps=100, duration=1.0, concurrency=4)
    run.wait(10)
    assert not run.running  # a queue of ~100 sends at 0.5 s on 4 workers would take ~12 s
    assert len(run.results) <= 4 * 3
    assert run.skipped >= 80
