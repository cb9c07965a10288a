"""model_server with several worker processes: one /metrics, drain, restart, shared readiness.

Real processes over real HTTP: a 2-worker server answers requests spread over both workers and
its /metrics totals equal the requests sent exactly (and each worker's own files add up to
them); SIGTERM to the parent drains every worker and exits 0; a worker killed with SIGKILL is
started again and counted; readiness is false until every worker has loaded its model; a
tampered bundle stops the parent with status 2 as it stops a single process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from tests.fixtures.serving import ServerProcess, echo_bundle, start_server

pytestmark = pytest.mark.slow


class SlowSecondLoad:
    """Echo model whose second unpickling (the second worker's) takes ``delay_s`` longer."""

    def __init__(self, marker: str, delay_s: float) -> None:
        self.marker = marker
        self.delay_s = delay_s

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(self.delay_s)

    def predict(self, X: Any) -> Any:
        return np.asarray(X, dtype=float)[:, 0].copy()


def _total(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _workers(server: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children()


def _start(bundle: Path, tmp_path: Path, *args: str) -> ServerProcess:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    # TMPDIR: the parent's private metrics directory lands where the test can look into it.
    return start_server(
        bundle, logs, "--workers", "2", *args, env={"TMPDIR": str(tmp_path)}, wait=False
    )


def _wait_ready(server: ServerProcess, timeout: float = 120.0) -> None:
    server.wait_ready(timeout=timeout)


@pytest.fixture
def stop_after() -> Any:
    started: list[ServerProcess] = []
    yield started.append
    for server in started:
        server.stop()


def _post_fresh_connections(url: str, n: int) -> list[int]:
    """``n`` one-row predicts, each on a new connection (so the kernel spreads them)."""

    async def run() -> list[int]:
        limits = httpx.Limits(max_keepalive_connections=0, max_connections=16)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
            responses = await asyncio.gather(
                *(
                    http.post("/v1/models/rf:predict", json={"instances": [[float(i), 0, 0, 0]]})
                    for i in range(n)
                )
            )
        return [r.status_code for r in responses]

    return asyncio.run(run())


@pytest.mark.parametrize("balance", ["reuseport", "handoff"])
def test_metrics_of_two_workers_sum_exactly(
    rf_bundle: Path, tmp_path: Path, stop_after: Any, balance: str
) -> None:
    server = _start(rf_bundle, tmp_path, "--balance", balance)
    stop_after(server)
    _wait_ready(server)
    assert len(_workers(server)) == 2
    n = 300
    assert _post_fresh_connections(server.url, n) == [200] * n
    text = httpx.get(f"{server.url}/metrics").text
    route = "/v1/models/{m}:predict"
    assert _total(text, "mlshift_requests_total", route=route) == n
    assert _total(text, "mlshift_requests_total", route=route, code="200") == n
    assert _total(text, "mlshift_request_duration_seconds_count", route=route) == n
    assert _total(text, "mlshift_request_duration_seconds_bucket", route=route, le="+Inf") == n
    assert _total(text, "mlshift_predictions_total") == n
    assert _total(text, "mlshift_batch_size_sum") == n
    assert _total(text, "model_server_workers") == 2
    assert _total(text, "model_server_worker_restarts_total") == 0

    # Both workers served: each one's own files hold part of the total.
    from prometheus_client.multiprocess import MultiProcessCollector

    (shared,) = tmp_path.glob("model_server-metrics-*")
    per_worker = []
    for worker in _workers(server):
        metrics = MultiProcessCollector.merge([str(shared / f"counter_{worker.pid}.db")])
        served = sum(
            s.value
            for m in metrics
            for s in m.samples
            if s.name == "mlshift_requests_total" and s.labels["route"] == route
        )
        per_worker.append(served)
    assert sum(per_worker) == n
    assert min(per_worker) > 0, f"one worker served nothing: {per_worker}"


def test_sigterm_drains_every_worker(tmp_path: Path, stop_after: Any) -> None:
    bundle = echo_bundle(tmp_path / "slow", delay_s=2.0)
    server = _start(bundle, tmp_path, "--grace-period-s", "20", "--balance", "handoff")
    stop_after(server)
    _wait_ready(server)
    workers = _workers(server)

    async def run() -> tuple[list[int], int]:
        # Round-robin handoff puts these 8 connections on both workers, 4 each.
        clients = [httpx.AsyncClient(base_url=server.url, timeout=60) for _ in range(8)]
        try:
            inflight = [
                asyncio.create_task(c.post("/v1/models/echo:predict", json={"instances": [[1, 0]]}))
                for c in clients
            ]
            await asyncio.sleep(0.8)  # inside the model now
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
                ready = (await probe.get("/v2/health/ready")).status_code
            codes = [r.status_code for r in await asyncio.gather(*inflight)]
            return codes, ready
        finally:
            for c in clients:
                await c.aclose()

    codes, ready = asyncio.run(run())
    assert ready == 503
    assert codes == [200] * 8
    assert server.proc.wait(timeout=30) == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "exited with 0" in server.log()
    assert not list(tmp_path.glob("model_server-metrics-*")), "metrics directory left behind"


def test_killed_worker_is_restarted_and_counted(
    rf_bundle: Path, tmp_path: Path, stop_after: Any
) -> None:
    server = _start(rf_bundle, tmp_path)
    stop_after(server)
    _wait_ready(server)
    assert _post_fresh_connections(server.url, 40) == [200] * 40
    victim, survivor = _workers(server)
    victim.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = {w.pid for w in _workers(server)}
        if len(pids) == 2 and victim.pid not in pids:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the killed worker was not started again:\n{server.log()}")
    assert survivor.pid in pids
    _wait_ready(server)
    assert _post_fresh_connections(server.url, 40) == [200] * 40
    text = httpx.get(f"{server.url}/metrics").text
    assert _total(text, "model_server_worker_restarts_total") == 1
    # The killed worker's counts stay in the sum.
    assert _total(text, "mlshift_requests_total", route="/v1/models/{m}:predict") == 80
    assert "died" in server.log()


def test_ready_only_when_every_worker_has_loaded(tmp_path: Path, stop_after: Any) -> None:
    from mlshift._bundle import write_bundle

    model = SlowSecondLoad(str(tmp_path / "first-load"), delay_s=6.0)
    sample = np.array([[1.0, 2.0], [3.0, 4.0]])
    bundle = write_bundle(
        model, "v1", sample=sample, dest=tmp_path / "b", name="echo", trust_pickle=True
    ).path
    (tmp_path / "first-load").unlink(missing_ok=True)  # writing the bundle read it back once
    server = _start(bundle, tmp_path)
    stop_after(server)
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            live = httpx.get(f"{server.url}/v2/health/live", timeout=2).status_code
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        seen.add((live, ready))
        if ready == 200:
            break
        time.sleep(0.05)
    assert (200, 503) in seen, f"no moment with one worker up and not all: {seen}"
    assert (200, 200) in seen
    response = httpx.post(f"{server.url}/v1/models/echo:predict", json={"instances": [[5, 0]]})
    assert response.json()["predictions"] == [5.0]


def test_tampered_bundle_stops_the_parent_with_status_2(tmp_path: Path, stop_after: Any) -> None:
    bundle = echo_bundle(tmp_path / "tampered")
    model_file = next(p for p in bundle.iterdir() if p.name != "mlshift.json")
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    server = _start(bundle, tmp_path)
    stop_after(server)
    assert server.proc.wait(timeout=120) == 2
    assert "sha256" in server.log()
    assert "restart" not in server.log()


def test_local_target_starts_and_stops_a_multi_worker_version(
    rf_bundle: Path, tmp_path: Path
) -> None:
    from mlshift.local import _processes as procs
    from mlshift.local._ownership import Expected

    record = procs.start_model_server(
        rf_bundle, name="rf", version="v1", run_dir=tmp_path / "run", workers=2
    )
    try:
        procs.wait_ready(record, what="rf/v1", name="rf", version="v1", timeout_s=120)
        workers = psutil.Process(record.pid).children()
        assert len(workers) == 2
        assert "--workers" in psutil.Process(record.pid).cmdline()
    finally:
        stopped = procs.stop(record, Expected.model_server("rf", "v1"), grace_s=30)
    assert stopped
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
