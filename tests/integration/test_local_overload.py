"""One heavy client must not take a healthy version out of routing (real Envoy, real server).

Covers (issue 12, section 3): four clients sending 7.9 MB valid bodies (under the 8 MiB limit)
over and over, beside about 100 single-row requests per second, through the endpoint's Envoy.
Decoding a body that size takes the server's event loop for a long time unless it is done off
the loop, and a health check that times out under that load once took the only version out of
routing (503 for a third of the small requests). Every small request must get a 2xx, and the
helper process that decodes large bodies exits with its server, even a killed one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.fixtures.local import Mesh

MeshFactory = Callable[[str], Mesh]

pytestmark = [pytest.mark.slow, pytest.mark.serial]

BIG_BYTES = 7_900_000


def _big_body() -> bytes:
    row = [12.345678, 0.5]
    one = len(orjson.dumps(row)) + 1
    rows = [row] * ((BIG_BYTES - 20) // one)
    body = orjson.dumps({"instances": rows})
    assert BIG_BYTES - 100 < len(body) <= BIG_BYTES < 8 * 1024 * 1024
    return body


def test_four_heavy_clients_do_not_take_the_version_out_of_routing(
    mesh_factory: MeshFactory, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    path = "/v1/models/churn:predict"
    big = _big_body()
    small = orjson.dumps({"instances": [[1.0, 2.0]]})
    headers = {"content-type": "application/json"}
    stop = threading.Event()
    big_codes: Counter[int | str] = Counter()
    small_codes: Counter[int | str] = Counter()
    lock = threading.Lock()

    def heavy() -> None:
        with httpx.Client(base_url=mesh.url, timeout=60.0, trust_env=False) as client:
            while not stop.is_set():
                try:
                    code: int | str = client.post(path, content=big, headers=headers).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with lock:
                    big_codes[code] += 1

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with (
        httpx.Client(base_url=mesh.url, timeout=30.0, limits=limits, trust_env=False) as client,
        ThreadPoolExecutor(64) as pool,
    ):

        def one() -> None:
            try:
                code: int | str = client.post(path, content=small, headers=headers).status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            with lock:
                small_codes[code] += 1

        heavies = [threading.Thread(target=heavy) for _ in range(4)]
        for thread in heavies:
            thread.start()
        time.sleep(0.5)  # the heavy bodies are on their way
        started = time.monotonic()
        futures: list[Any] = []
        for i in range(600):  # about 100 a second for six seconds
            time.sleep(max(0.0, started + i / 100 - time.monotonic()))
            futures.append(pool.submit(one))
        for future in futures:
            future.result()
        stop.set()
        for thread in heavies:
            thread.join(timeout=120)
    failed = {code: n for code, n in small_codes.items() if not str(code).startswith("2")}
    print(
        f"small requests: {sum(small_codes.values())} sent, {dict(small_codes)};"
        f" heavy: {dict(big_codes)}"
    )
    assert sum(small_codes.values()) == 600
    assert sum(big_codes.values()) >= 4, big_codes  # the heavy load was there throughout
    assert not failed, f"{sum(failed.values())} of 600 small requests failed: {small_codes}"

    # The server's decoding helper never outlives it, even when the server is killed.
    server = psutil.Process(mesh.engine.pids()["v1"])
    helpers = server.children()
    assert helpers, "the heavy bodies were decoded in the server's own process"
    server.kill()
    _, alive = psutil.wait_procs(helpers, timeout=15)
    assert not alive, f"decoding helpers outlived their server: {alive}"
