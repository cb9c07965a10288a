"""The request journal on Kubernetes, read through the API server's pod proxy.

Each emulated pod is backed by a real model_server process on 127.0.0.1
(``KubeEmulator.back_pod``); the emulator's pod proxy (``tests/fixtures/kube_proxy.py``)
forwards to it as kube-apiserver forwards to ``podIP:port``. Inferences go straight to the
processes with ``x-request-id`` headers, as Envoy (or a mirror) sends them; the engine, the
facade (``ep.journal``, ``ep.compare``) and the canary's per-request latencies then read
them back with the official client.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlshift._canary import _latencies
from mlshift._endpoint import Endpoint
from mlshift._exceptions import APIError, NotReadyError
from mlshift._state import EndpointState
from tests.fixtures.kube import KubeEmulator
from tests.fixtures.serving import ServerProcess, start_server
from tests.integration.test_kube_engine import _deploy, _spec, _target

pytestmark = pytest.mark.slow

Starter = Callable[[str], ServerProcess]


@pytest.fixture(scope="module")
def churn_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    rf_model: Any,
    array_data: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> Path:
    from mlshift._bundle import write_bundle

    dest = tmp_path_factory.mktemp("bundles") / "churn"
    return write_bundle(rf_model, "v1", sample=array_data[0][:5], dest=dest, name="churn").path


@pytest.fixture
def serve(churn_bundle: Path, tmp_path: Path) -> Iterator[Starter]:
    """Start model_server as the Deployment runs it (``MLSHIFT_MODEL_NAME``/``_VERSION``)."""
    started: list[ServerProcess] = []

    def start(version: str, name: str = "churn") -> ServerProcess:
        env = {"MLSHIFT_MODEL_NAME": name, "MLSHIFT_MODEL_VERSION": version}
        server = start_server(churn_bundle, tmp_path, env=env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _infer(server: ServerProcess, request_id: str, rows: np.ndarray[Any, Any]) -> None:
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    answer = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        json=body,
        headers={"x-request-id": request_id},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def _own_journal(server: ServerProcess, since: float) -> list[dict[str, Any]]:
    """The journal as the process itself serves it (no API server in between)."""
    answer = httpx.get(
        f"{server.url}/v2/models/churn/journal", params={"since": repr(since)}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def _backed(emu: KubeEmulator, version: str, *servers: ServerProcess) -> list[str]:
    pods = emu.pods(app="churn", version=version)
    assert len(pods) == len(servers), pods
    for pod, server in zip(pods, servers, strict=True):
        emu.back_pod(pod, server.port)
    return pods


def test_engine_reads_a_pods_journal_through_the_pod_proxy(
    kube_emulator: KubeEmulator, serve: Starter, array_data: Any
) -> None:
    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, _spec("v1"))
    server = serve("v1")
    (pod,) = _backed(kube_emulator, "v1", server)
    since = time.time() - 1
    X = array_data[0]
    for i in range(3):
        _infer(server, f"req-{i}", X[i : i + 2])

    entries = engine.journal(state, "v1", since=since)

    assert entries == _own_journal(server, since)  # the real server's answer, unchanged
    assert [e["id"] for e in entries] == ["req-0", "req-1", "req-2"]
    proxied = [
        r
        for r in list(kube_emulator.kmock)
        if "/proxy/" in r.url.path and str(r.method.value).upper() == "GET"
    ]
    assert [r.url.path for r in proxied] == [
        f"/api/v1/namespaces/ml/pods/{pod}:8080/proxy/v2/models/churn/journal"
    ]
    assert float(proxied[0].url.query["since"]) == pytest.approx(since)
    # ``since`` is passed through: nothing before it comes back.
    assert engine.journal(state, "v1", since=time.time() + 60) == []


def test_the_journal_needs_only_what_the_rbac_role_grants(
    kube_emulator: KubeEmulator, serve: Starter
) -> None:
    from mlshift.kube import rbac

    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, _spec("v1"))
    _backed(kube_emulator, "v1", serve("v1"))
    seen = len(list(kube_emulator.kmock))

    engine.journal(state, "v1", since=0.0)

    used = set()
    for req in list(kube_emulator.kmock)[seen:]:
        # What the authorizer checks: ``connect`` GET on pods/proxy is verb get.
        if "/proxy/" in req.url.path:
            used.add(("", "pods/proxy", "get"))
        else:
            assert req.resource is not None and not req.name
            used.add((req.resource.group, req.resource.plural, "list"))
    granted = {
        (group, resource, verb)
        for rule in rbac("ml")[0]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used == {("", "pods", "list"), ("", "pods/proxy", "get")}
    assert used <= granted


def test_two_replicas_journals_are_merged_in_time_order(
    kube_emulator: KubeEmulator, serve: Starter, array_data: Any
) -> None:
    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, dataclasses.replace(_spec("v1"), replicas=2))
    first, second = serve("v1"), serve("v1")
    _backed(kube_emulator, "v1", first, second)
    since = time.time() - 1
    X = array_data[0]
    for i, server in enumerate([first, second, first, second]):
        _infer(server, f"req-{i}", X[i : i + 1])

    entries = engine.journal(state, "v1", since=since)

    assert [e["id"] for e in entries] == ["req-0", "req-1", "req-2", "req-3"]
    own = _own_journal(first, since) + _own_journal(second, since)
    assert sorted(entries, key=lambda e: e["id"]) == sorted(own, key=lambda e: e["id"])


def test_facade_journal_compare_and_canary_latencies_on_kubernetes(
    kube_emulator: KubeEmulator, serve: Starter, array_data: Any
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    v1, v2 = serve("v1"), serve("v2")
    _backed(kube_emulator, "v1", v1)
    _backed(kube_emulator, "v2", v2)
    X = array_data[0]
    for i in range(4):  # the primary's request and its mirrored copy share the id
        _infer(v1, f"req-{i}", X[i : i + 2])
        _infer(v2, f"req-{i}", X[i : i + 2])
    _infer(v1, "only-primary", X[10:11])
    ep = Endpoint("churn", _target(kube_emulator))

    journal = ep.journal("v1", since="1m")
    comparison = ep.compare("v1", "v2", since="1m")
    latencies = _latencies(ep, ("v2", "v1"), 60.0)

    assert sorted(set(journal["id"])) == ["only-primary", "req-0", "req-1", "req-2", "req-3"]
    assert len(journal) == 9  # one row per predicted value
    assert len(comparison.frame) == 8  # the 4 paired requests' 2 rows each
    assert bool(comparison.frame["agree"].all())  # the same model answered both
    assert comparison.summary["agreement"] == 1.0
    own_v1 = _own_journal(v1, 0.0)
    np.testing.assert_array_equal(
        latencies["v1"], [e["latency_ms"] for e in own_v1 for _ in e["prediction"]]
    )
    assert len(latencies["v2"]) == 8


def test_a_replica_the_proxy_cannot_read_is_named_with_the_fix(
    kube_emulator: KubeEmulator, serve: Starter
) -> None:
    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, _spec("v1"))
    (pod,) = kube_emulator.pods(app="churn", version="v1")
    message = (
        f'pods "{pod}" is forbidden: User "system:serviceaccount:ml:notebook" cannot get'
        ' resource "pods/proxy" in API group "" in the namespace "ml"'
    )
    kube_emulator.run(
        lambda: kube_emulator.kmock.fail_next("GET", "pods/proxy", 403, message=message)
    )

    with pytest.raises(APIError) as forbidden:
        engine.journal(state, "v1", since=0.0)
    assert forbidden.value.code == 403
    assert pod in str(forbidden.value)
    assert "pods/proxy" in str(forbidden.value)
    assert "mlshift.rbac" in str(forbidden.value)

    # No process behind the pod's port: the API server cannot reach it (503).
    with pytest.raises(APIError) as unreachable:
        engine.journal(state, "v1", since=0.0)
    assert unreachable.value.code == 503
    assert pod in str(unreachable.value)
    assert "error trying to reach service" in str(unreachable.value)
    assert "8080" in str(unreachable.value)

    # The pod answers, but 404: it has no journal at that path (here, another model's name).
    kube_emulator.back_pod(pod, serve("v1", name="other").port)
    with pytest.raises(APIError) as missing:
        engine.journal(state, "v1", since=0.0)
    assert missing.value.code == 404
    assert pod in str(missing.value)
    assert "CRD" not in str(missing.value)
    assert "journal" in str(missing.value)
    # A 2xx answer that is not JSON (the server's Prometheus text) is an APIError too.
    with pytest.raises(APIError, match="not JSON"):
        engine.api.proxy_get("ml", pod, 8080, "metrics", {})


def test_canary_latencies_say_unavailable_when_a_replica_cannot_be_read(
    kube_emulator: KubeEmulator, serve: Starter, array_data: Any
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    server = serve("v1")
    _backed(kube_emulator, "v1", server)
    _infer(server, "req-0", array_data[0][:1])
    ep = Endpoint("churn", _target(kube_emulator))
    assert len(_latencies(ep, ("v1",), 60.0)["v1"]) == 1

    kube_emulator.run(lambda: kube_emulator.kmock.fail_next("GET", "pods/proxy", 403))

    assert _latencies(ep, ("v1",), 60.0) == {}  # histograms instead, not a partial sample


# ---------------------------------------------------------------- the emulator's pod proxy


def _proxy(emu: KubeEmulator, pod_id: str, path: str, **params: str) -> httpx.Response:
    url = f"{emu.url}/api/v1/namespaces/ml/pods/{pod_id}/proxy/{path}"
    return httpx.get(url, params=params, headers={"Authorization": "Bearer x"}, timeout=10)


def _status(answer: httpx.Response) -> tuple[int, str, str]:
    body = answer.json()
    assert (body["kind"], body["status"], body["code"]) == ("Status", "Failure", answer.status_code)
    return answer.status_code, body["reason"], body["message"]


def test_pod_proxy_answers_as_kube_apiserver(
    kube_emulator: KubeEmulator, serve: Starter, array_data: Any
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    server = serve("v1")
    (pod,) = _backed(kube_emulator, "v1", server)
    _infer(server, "req-0", array_data[0][:1])
    ip = kube_emulator.obj("v1/pods", pod)["status"]["podIP"]  # type: ignore[index]

    # No port in the id: the first containerPort the pod declares (8080); bytes unchanged.
    ready = _proxy(kube_emulator, pod, "v2/health/ready")
    assert (ready.status_code, ready.content) == (
        200,
        httpx.get(f"{server.url}/v2/health/ready").content,
    )
    # The query string reaches the pod.
    future = _proxy(kube_emulator, f"http:{pod}:8080", "v2/models/churn/journal", since="9e9")
    assert (future.status_code, future.json()["entries"]) == (200, [])
    # The pod's own non-2xx answer comes back with its status, body and content type.
    own = httpx.get(f"{server.url}/v2/models/churn/journal", params={"since": "x"})
    bad = _proxy(kube_emulator, f"{pod}:8080", "v2/models/churn/journal", since="x")
    assert (bad.status_code, bad.content, bad.headers["content-type"]) == (
        own.status_code,
        own.content,
        own.headers["content-type"],
    )
    assert bad.status_code == 400
    # A port the containers do not declare is not refused; nothing listens there: 503.
    assert _status(_proxy(kube_emulator, f"{pod}:9090", "metrics")) == (
        503,
        "ServiceUnavailable",
        f"error trying to reach service: dial tcp {ip}:9090: connect: connection refused",
    )
    # An unknown pod.
    assert _status(_proxy(kube_emulator, "churn-v1-gone:8080", "x")) == (
        404,
        "NotFound",
        'pods "churn-v1-gone" not found',
    )
    # A malformed id.
    assert _status(_proxy(kube_emulator, "ftp:a:b:c", "x"))[:2] == (400, "BadRequest")
    # The process behind the pod went away.
    kube_emulator.back_pod(pod, None)
    assert _status(_proxy(kube_emulator, pod, "v2/health/ready"))[:2] == (
        503,
        "ServiceUnavailable",
    )


def test_pod_proxy_refuses_a_pod_without_an_address(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, rollout_timeout=0.3).engine("churn")
    spec = _spec("v1", image="registry.test/ml/unschedulable@sha256:" + "1" * 64)
    with pytest.raises(NotReadyError):
        _deploy(engine, spec)
    (pod,) = kube_emulator.pods(app="churn", version="v1")  # Pending: no IP yet

    answer = _proxy(kube_emulator, f"{pod}:8080", "v2/health/ready")

    assert _status(answer) == (400, "BadRequest", "address not allowed")
    # The engine reads running replicas only: a pending one has answered nothing yet.
    state = EndpointState("churn", namespace="ml").with_version(spec)
    assert engine.journal(state, "v1", since=0.0) == []
