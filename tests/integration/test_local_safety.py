"""The local mesh on a shared machine, through the facade, against a real Envoy and model servers.

Covers (issue 12): ``remove``/``revive``/``delete`` never signal a process they cannot prove is
theirs (a run record with no start time, or with the right start time but another command
line); Envoy's admin is a Unix socket with mode 0600 in the endpoint's state directory (no TCP
admin port), and a router whose listener was drained, or which was told to quit, shows as not
serving in ``status()`` and is restarted by ``revive()``; ``delete()`` with a truncated
``state.json`` still stops every process and removes the directory; ``revive()`` rewrites a
lost route file and ``status()`` says when the router has no routes; a crashed version's
status says how it ended, with its last log lines; a tampered bundle's digest mismatch shows
in ``status()`` and deploying the same version again repairs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

import mlshift
from mlshift._exceptions import MlshiftError, NotReadyError
from mlshift.local import Local
from tests.fixtures.local import hit

pytestmark = pytest.mark.slow


class Tracked:
    """An endpoint on a short state directory, and every pid the test saw, killed at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ep = mlshift.Endpoint("churn", Local(home))
        self.pids: set[int] = set()

    @property
    def root(self) -> Path:
        return self.home / "endpoints" / "churn"

    def seen(self) -> dict[str, int]:
        pids: dict[str, int] = self.ep.engine.pids()  # type: ignore[attr-defined]
        self.pids.update(pids.values())
        return pids

    def record(self, name: str) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.root / "run" / f"{name}.json").read_text())
        return data

    def reason(self, version: str) -> str:
        return str(self.ep.status().loc[version, "reason"])

    def wait_until(self, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.05)


@pytest.fixture
def mesh() -> Iterator[Tracked]:
    # A short state directory: the admin socket lives in it, and socket paths are short.
    home = Path(tempfile.mkdtemp(prefix="mls-"))
    tracked = Tracked(home)
    try:
        yield tracked
    finally:
        with contextlib.suppress(Exception):
            tracked.seen()
        with contextlib.suppress(Exception):
            tracked.ep.delete()
        for pid in tracked.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def foreign() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start ``sleep 300`` processes that belong to someone else (as far as mlshift knows)."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _write_record(path: Path, pid: int, *, started: float | None, port: int) -> None:
    path.write_text(json.dumps({"pid": pid, "port": port, "started": started, "log": ""}))


def _still_running(proc: subprocess.Popen[bytes]) -> bool:
    time.sleep(0.3)  # a SIGTERM'd sleep is gone well within this
    return proc.poll() is None


def test_remove_revive_and_delete_never_signal_processes_they_cannot_prove_are_theirs(
    mesh: Tracked, local_bundle: Path, foreign: Callable[[], subprocess.Popen[bytes]]
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    mesh.ep.deploy(local_bundle, "v2")
    mesh.seen()
    run = mesh.root / "run"
    other, unproven = foreign(), foreign()
    other_started = psutil.Process(other.pid).create_time()

    # v2's record names a process with the right start time but another command line.
    _write_record(
        run / "v2.json", other.pid, started=other_started, port=int(mesh.record("v2")["port"])
    )  # type: ignore[call-overload]
    mesh.ep.remove("v2")
    assert _still_running(other)

    # v1's record names a process whose start time was never recorded: unprovable, so v1 is
    # not running as far as mlshift can tell, and revive starts it again (leaving that alone).
    _write_record(run / "v1.json", unproven.pid, started=None, port=int(mesh.record("v1")["port"]))  # type: ignore[call-overload]
    assert not mesh.ep.status().loc["v1", "ready"]
    assert mesh.ep.revive() == ["v1"]
    mesh.seen()
    assert _still_running(unproven)
    assert bool(mesh.ep.status().loc["v1", "ready"])
    assert hit(mesh.ep.url, 20) == (Counter({"v1": 20}), Counter({200: 20}))

    # Records of no version (left by anything): delete reads them all and signals neither.
    ours = mesh.seen()
    _write_record(run / "stray.json", unproven.pid, started=None, port=1)
    _write_record(run / "other.json", other.pid, started=other_started, port=1)
    mesh.ep.delete()
    assert _still_running(unproven) and _still_running(other)
    assert not mesh.root.exists()
    for pid in ours.values():  # what delete could prove was its own is gone
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_router_admin_is_a_private_socket_and_a_drained_or_quit_router_is_revived(
    mesh: Tracked, local_bundle: Path
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    envoy = mesh.seen()["envoy"]
    socket_path = mesh.root / "envoy" / "admin.sock"
    mode = socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    router_port = int(mesh.ep.url.rsplit(":", 1)[1])
    listening = {
        c.laddr.port
        for c in psutil.Process(envoy).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {router_port}  # no admin port for other local users to reach
    assert str(router_port) not in "".join(
        p.read_text(errors="replace") for p in (mesh.root / "envoy").glob("admin*") if p.is_file()
    )

    admin = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://envoy", timeout=5.0
    )
    with admin:
        assert admin.post("/drain_listeners").status_code == 200
    mesh.wait_until(lambda: not mesh.ep.status().loc["v1", "ready"])
    assert "listen" in mesh.reason("v1")
    assert mesh.ep.revive() == []
    mesh.seen()
    assert bool(mesh.ep.status().loc["v1", "ready"])
    assert hit(mesh.ep.url, 20) == (Counter({"v1": 20}), Counter({200: 20}))

    envoy = mesh.seen()["envoy"]
    admin = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://envoy", timeout=5.0
    )
    with admin:
        assert admin.post("/quitquitquit").status_code == 200
    mesh.wait_until(lambda: not psutil.pid_exists(envoy))
    assert "not running" in mesh.reason("v1")
    mesh.ep.revive()
    mesh.seen()
    assert hit(mesh.ep.url, 20) == (Counter({"v1": 20}), Counter({200: 20}))


def test_delete_with_damaged_state_stops_every_process_and_removes_the_directory(
    mesh: Tracked, local_bundle: Path
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    mesh.ep.deploy(local_bundle, "v2")
    pids = mesh.seen()
    assert set(pids) == {"envoy", "v1", "v2"}
    state = mesh.root / "state.json"
    state.write_text(state.read_text()[:25])  # truncated
    with pytest.raises(MlshiftError, match=r"ep\.delete\(\)"):
        mesh.ep.status()  # and the advice is to delete (which stops the processes)
    fresh = mlshift.Endpoint("churn", Local(mesh.home))  # e.g. a new notebook
    fresh.delete()
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not mesh.root.exists()


def test_revive_rewrites_lost_routes_and_status_says_the_router_has_none(
    mesh: Tracked, local_bundle: Path
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    envoy = mesh.seen()["envoy"]
    routes = mesh.root / "envoy" / "rds" / "rds.json"
    os.kill(envoy, signal.SIGKILL)
    routes.unlink()
    mesh.ep.revive()
    mesh.seen()
    assert hit(mesh.ep.url, 40) == (Counter({"v1": 40}), Counter({200: 40}))
    assert bool(mesh.ep.status().loc["v1", "ready"])

    # Envoy started again by anything else with the route file gone has no routes: say so.
    envoy = mesh.seen()["envoy"]
    os.kill(envoy, signal.SIGKILL)
    routes.unlink()
    mesh.wait_until(
        lambda: (
            not psutil.pid_exists(envoy) or psutil.Process(envoy).status() == psutil.STATUS_ZOMBIE
        )
    )
    mesh.ep.engine.router.ensure_running()  # type: ignore[attr-defined]
    mesh.seen()
    assert hit(mesh.ep.url, 10)[1] == Counter({404: 10})
    assert not mesh.ep.status().loc["v1", "ready"]
    assert "no routes" in mesh.reason("v1")
    mesh.ep.revive()
    assert hit(mesh.ep.url, 40) == (Counter({"v1": 40}), Counter({200: 40}))


def test_crashed_version_status_says_how_it_ended_with_its_last_log_lines(
    mesh: Tracked, local_bundle: Path
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    mesh.ep.deploy(local_bundle, "v2")
    victim = mesh.seen()["v2"]
    with open(mesh.root / "run" / "v2.log", "a") as log:
        log.write("RuntimeError: the model ran out of patience\n")
    os.kill(victim, signal.SIGKILL)
    mesh.wait_until(lambda: not mesh.ep.status().loc["v2", "ready"])
    reason = mesh.reason("v2")
    assert "stale" not in reason
    assert "killed" in reason and "code -9" in reason
    assert "ran out of patience" in reason


def test_tampered_bundle_shows_the_digest_mismatch_and_deploying_again_repairs_it(
    mesh: Tracked, local_bundle: Path
) -> None:
    mesh.ep.deploy(local_bundle, "v1")
    victim = mesh.seen()["v1"]
    bundle = mesh.root / "bundles" / "v1"
    model = next(p for p in bundle.iterdir() if p.name != "mlshift.json")
    model.write_bytes(model.read_bytes() + b"tampered")
    os.kill(victim, signal.SIGKILL)
    mesh.wait_until(lambda: not mesh.ep.status().loc["v1", "ready"])
    with pytest.raises(NotReadyError):
        mesh.ep.revive()
    mesh.seen()
    reason = mesh.reason("v1")
    assert "sha256" in reason, reason
    mesh.ep.deploy(local_bundle, "v1")  # the same model again: not a no-op while it is down
    mesh.seen()
    assert bool(mesh.ep.status().loc["v1", "ready"])
    assert hit(mesh.ep.url, 20) == (Counter({"v1": 20}), Counter({200: 20}))
