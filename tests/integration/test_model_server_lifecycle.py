"""model_server processes under load and through their life: batching, failures, drain, refusal.

64 concurrent clients each get exactly their own rows back while requests are coalesced; an
exception inside the model becomes a 500 with its message and the server keeps serving; SIGTERM
turns readiness false first, lets in-flight requests finish and exits 0; a tampered bundle is
refused at start with a clear message.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.serving import echo_bundle

pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_64_concurrent_clients_get_their_own_rows(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory(echo_bundle(tmp_path / "echo", delay_s=0.05))

    async def client(http: httpx.AsyncClient, i: int) -> list[float]:
        rows = [[float(i * 100 + k), 0.0] for k in range(i % 3 + 1)]
        path = "/v1/models/echo:predict" if i % 2 else "/v2/models/echo/infer"
        if i % 2:
            response = await http.post(path, json={"instances": rows})
            return list(response.json()["predictions"])
        flat = [v for row in rows for v in row]
        body = {
            "inputs": [{"name": "x", "shape": [len(rows), 2], "datatype": "FP64", "data": flat}]
        }
        response = await http.post(path, json=body)
        return list(response.json()["outputs"][0]["data"])

    async def run() -> list[list[float]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            results: list[list[float]] = []
            for _ in range(3):
                results = await asyncio.gather(*(client(http, i) for i in range(64)))
            return results

    results = asyncio.run(run())
    for i, predictions in enumerate(results):
        assert predictions == [float(i * 100 + k) for k in range(i % 3 + 1)]
    text = httpx.get(f"{server.url}/metrics").text
    calls = _metric(text, "mlshift_batch_size_count")
    rows = _metric(text, "mlshift_batch_size_sum")
    assert rows == 3 * sum(i % 3 + 1 for i in range(64))
    assert calls < 3 * 64 / 2, f"requests were not coalesced: {calls} predict calls"
    assert 'mlshift_prediction_value_bucket{le="+Inf",model="echo",version="v3"}' in text


def test_model_exception_is_500_and_server_keeps_serving(
    tmp_path: Path, server_factory: Any
) -> None:
    server = server_factory(echo_bundle(tmp_path / "fragile", fail_below=0.0))
    bad = httpx.post(f"{server.url}/v1/models/echo:predict", json={"instances": [[-1.0, 0.0]]})
    assert bad.status_code == 500
    assert "feature 0 below 0.0 is not supported" in bad.json()["error"]
    assert bad.headers["x-mlshift-version"] == "v3"
    good = httpx.post(f"{server.url}/v1/models/echo:predict", json={"instances": [[2.0, 0.0]]})
    assert good.status_code == 200
    assert good.json()["predictions"] == [2.0]
    assert "ValueError" in server.log()  # logged with its traceback


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory(echo_bundle(tmp_path / "slow", delay_s=1.5), "--grace-period-s", "10")

    async def run() -> tuple[list[int], int, float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {"instances": [[1.0, 0.0]]}
            inflight = [
                asyncio.create_task(http.post("/v1/models/echo:predict", json=body))
                for _ in range(4)
            ]
            await asyncio.sleep(0.3)  # the requests are now inside the model
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await http.get("/v2/health/ready")
            started = time.monotonic()
            codes = [r.status_code for r in await asyncio.gather(*inflight)]
            return codes, ready.status_code, started

    codes, ready_status, drained_at = asyncio.run(run())
    assert ready_status == 503
    assert codes == [200, 200, 200, 200]
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - drained_at < 5


def test_tampered_bundle_is_refused_at_start(tmp_path: Path, server_factory: Any) -> None:
    bundle = echo_bundle(tmp_path / "tampered")
    model_file = next(p for p in bundle.iterdir() if p.name != "mlshift.json")
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    server = server_factory(bundle, wait=False)
    try:
        code = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("model_server served a tampered bundle")
    assert code == 2
    assert "sha256" in server.log()
    assert "refusing to load" in server.log()
