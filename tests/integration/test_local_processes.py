"""Liveness and ownership of local-mesh process records against real processes (no Envoy).

Covers: ``spawn`` records the creation time psutil reports; a running process is alive and a
stopped one is not; a zombie (exited, not yet reaped by a parent that is not mlshift) is not
alive; a record whose creation time differs by more than the tolerance is stale, and so is one
with no creation time; ``stop`` signals only a process proven to be the expected one (same
start time and the expected command line: a ``model_server`` of this endpoint and version, or
an Envoy on this endpoint's bootstrap), never another; ``wait_ready`` does not take another
server on the version's port for the version; the Envoy admin socket falls back to a private
directory when the state directory's path is too long for a socket address.
"""

from __future__ import annotations

import http.server
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mlshift._exceptions import NotReadyError
from mlshift.local._envoy_admin import admin_socket_path
from mlshift.local._ownership import Expected, ProcessRecord, alive, owned, read_record
from mlshift.local._processes import spawn, stop, wait_ready

EXPECTED = Expected.model_server("churn", "v1")


def test_spawned_record_carries_the_creation_time(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    record = spawn(cmd, log_path=tmp_path / "p.log", record_path=tmp_path / "p.json", port=1)
    try:
        assert record.started is not None
        assert abs(record.started - psutil.Process(record.pid).create_time()) < 0.01
        assert abs(record.started - time.time()) < 30  # epoch seconds, not ticks since boot
        assert read_record(tmp_path / "p.json") == record
        assert alive(record)
        assert not alive(replace(record, started=record.started - 1.0))
    finally:
        os.kill(record.pid, 9)
        for _ in range(250):
            if not alive(record):
                break
            time.sleep(0.02)
    assert not alive(record)


def test_a_zombie_is_not_alive() -> None:
    # Popen outside mlshift: the child exits and stays a zombie until this test reaps it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        proc = psutil.Process(child.pid)
        record = ProcessRecord(child.pid, 1, proc.create_time(), "")
        deadline = time.monotonic() + 10.0
        while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.status() == psutil.STATUS_ZOMBIE
        assert not alive(record)
    finally:
        child.wait()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A ``sleep 300`` that is not mlshift's."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_stop_never_signals_a_process_it_cannot_prove_is_the_expected_one(
    sleeper: subprocess.Popen[bytes],
) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    unproven = ProcessRecord(sleeper.pid, 1, None, "")
    another_command = ProcessRecord(sleeper.pid, 1, started, "")
    for record in (unproven, another_command):
        assert not owned(record, EXPECTED)
        assert stop(record, EXPECTED, grace_s=1.0) is False
    assert not alive(unproven)  # no start time: unprovable, so stale
    time.sleep(0.2)
    assert sleeper.poll() is None  # never signalled


def test_stop_signals_the_expected_model_server(tmp_path: Path) -> None:
    # A stand-in package named model_server, run the way the engine runs the real one.
    (tmp_path / "model_server").mkdir()
    (tmp_path / "model_server" / "__main__.py").write_text("import time\ntime.sleep(300)\n")
    cmd = [sys.executable, "-m", "model_server", "--model-dir", "b", "--port", "1"]
    cmd += ["--name", "churn", "--version", "v1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path)
    try:
        child = psutil.Process(proc.pid)
        deadline = time.monotonic() + 10.0
        # Between fork and exec the child still shows the parent's command line: wait for it.
        while "model_server" not in child.cmdline() and time.monotonic() < deadline:
            time.sleep(0.01)
        record = ProcessRecord(proc.pid, 1, child.create_time(), "")
        assert owned(record, EXPECTED)
        assert not owned(record, Expected.model_server("churn", "v2"))
        assert not owned(record, Expected.model_server("other", "v1"))
        assert not owned(record, Expected.envoy(tmp_path / "bootstrap.json"))
        assert stop(record, EXPECTED, grace_s=5.0) is True
        assert proc.wait(timeout=5.0) != 0
    finally:
        proc.kill()
        proc.wait()


def test_envoy_is_recognised_by_its_binary_and_this_endpoints_bootstrap(tmp_path: Path) -> None:
    bootstrap = tmp_path / "envoy" / "bootstrap.json"
    argv = ["/venv/envoy/_bin/envoy", "-c", str(bootstrap), "--disable-hot-restart"]
    assert Expected.envoy(bootstrap).matches(argv)
    assert not Expected.envoy(tmp_path / "other" / "bootstrap.json").matches(argv)
    assert not Expected.envoy(bootstrap).matches(["/bin/sleep", "-c", str(bootstrap)])
    assert not EXPECTED.matches(argv)


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers 200 to everything, as some other program on a reused port might."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("x-mlshift-version", "v7")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_wait_ready_does_not_take_another_server_on_the_port_for_the_version(
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    port = int(server.server_address[1])
    record = spawn(cmd, log_path=tmp_path / "v1.log", record_path=tmp_path / "v1.json", port=port)
    try:
        with pytest.raises(NotReadyError, match="another server"):
            wait_ready(record, what="v1", name="churn", version="v1", timeout_s=1.5)
    finally:
        server.shutdown()
        os.kill(record.pid, 9)


def test_admin_socket_falls_back_to_a_private_directory_for_long_paths(tmp_path: Path) -> None:
    short = admin_socket_path(tmp_path / "envoy")
    assert short == tmp_path / "envoy" / "admin.sock"
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5, "envoy")
    long = admin_socket_path(deep)
    assert len(os.fsencode(long)) < 100
    assert long != admin_socket_path(tmp_path.joinpath(*["another-long-directory-name"] * 5))
    private = long.parent.stat()
    assert private.st_uid == os.getuid() and stat.S_IMODE(private.st_mode) == 0o700
