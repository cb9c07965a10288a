"""How the local mesh logs a version's ``/metrics`` it cannot read (``server_metrics``).

Expected states stay quiet: a version whose process runs but does not listen yet (still
starting) or no longer listens (going away) is connection-refused, logged at DEBUG only. A
running server that answers something unexpected (here a 500) is still a WARNING.
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlshift.local._files import EndpointFiles
from mlshift.local._ownership import ProcessRecord
from mlshift.local._predictions import server_metrics
from tests.fixtures.serving import free_port


class _Broken(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def broken_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _files(tmp_path: Path, version: str, port: int) -> EndpointFiles:
    """An endpoint whose ``version`` is a live process (this one) said to listen on ``port``."""
    files = EndpointFiles(tmp_path / "endpoints" / "churn")
    files.run_dir.mkdir(parents=True)
    me = psutil.Process(os.getpid())
    ProcessRecord(os.getpid(), port, me.create_time(), "").save(files.record_path(version))
    return files


def test_a_version_not_listening_is_logged_at_debug_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _files(tmp_path, "v2", free_port())  # nothing listens there: refused
    caplog.set_level(logging.DEBUG, logger="mlshift")
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        assert server_metrics(client, files, ["v2"]) == {}
    mine = [r for r in caplog.records if "/metrics" in r.getMessage()]
    assert mine, "the refused read should still be logged, at DEBUG"
    assert {r.levelno for r in mine} == {logging.DEBUG}
    assert "churn/v2" in mine[0].getMessage()


def test_an_unexpected_answer_is_still_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken_port: int
) -> None:
    files = _files(tmp_path, "v1", broken_port)
    caplog.set_level(logging.DEBUG, logger="mlshift")
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        assert server_metrics(client, files, ["v1"]) == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "500" in warnings[0].getMessage()
