"""The strict test counterpart answers as a real API server does (tests/fixtures/kube_strict.py).

Plain HTTP against it, no mlshift code: served versions and discovery, the plain-text 404 of
an unserved path versus the ``Status`` 404 naming a missing object, resourceVersion and 409
on a stale write, name and schema validation (422), generation, an injected 429.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from mlshift._render import render_deployment, render_service
from mlshift._state import EndpointState, VersionSpec
from tests.fixtures.kube import KubeEmulator
from tests.fixtures.kube_strict import ISTIO_1_21, NO_ISTIO

DEPS = "/apis/apps/v1/namespaces/ml/deployments"
SVCS = "/api/v1/namespaces/ml/services"


def _call(
    emu: KubeEmulator, method: str, path: str, body: Any = None, patch: bool = False
) -> tuple[int, str, str, Any]:
    data = None if body is None else json.dumps(body).encode()
    kind = "application/merge-patch+json" if patch else "application/json"
    req = urllib.request.Request(emu.url + path, data=data, method=method)
    req.add_header("Content-Type", kind)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read().decode()
            return resp.status, resp.headers.get("Content-Type", ""), raw, json.loads(raw)
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode()
        parsed = json.loads(raw) if raw.startswith("{") else None
        return exc.code, exc.headers.get("Content-Type", ""), raw, parsed


def _state() -> EndpointState:
    spec = VersionSpec("v1", "0" * 64, image="registry.test/ml/churn@sha256:" + "0" * 64)
    return EndpointState("churn", "ml").with_version(spec)


def test_discovery_and_the_two_kinds_of_404(kube_emulator: KubeEmulator) -> None:
    kube_emulator.serve(ISTIO_1_21)
    code, _, _, groups = _call(kube_emulator, "GET", "/apis")
    istio = next(g for g in groups["groups"] if g["name"] == "networking.istio.io")
    assert [v["version"] for v in istio["versions"]] == ["v1beta1", "v1alpha3"]
    path = "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/churn"
    code, content_type, text, _ = _call(kube_emulator, "GET", path)
    assert (code, text) == (404, "404 page not found\n")
    assert content_type.startswith("text/plain")
    code, _, _, status = _call(kube_emulator, "GET", path.replace("/v1/", "/v1beta1/"))
    assert (code, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    assert status["details"] == {
        "name": "churn",
        "kind": "virtualservices",
        "group": "networking.istio.io",
    }
    kube_emulator.serve(NO_ISTIO)
    code, _, text, _ = _call(kube_emulator, "GET", "/apis/networking.istio.io")
    assert (code, text) == (404, "404 page not found\n")


def test_resource_version_generation_and_stale_writes(kube_emulator: KubeEmulator) -> None:
    dep = render_deployment(_state(), _state().versions[0])
    code, _, _, created = _call(kube_emulator, "POST", DEPS, dep)
    assert code == 201  # Created
    rv = created["metadata"]["resourceVersion"]
    assert created["metadata"]["generation"] == 1
    code, _, _, again = _call(kube_emulator, "POST", DEPS, dep)
    assert (code, again["reason"]) == (409, "AlreadyExists")
    patch = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 2}}
    code, _, _, patched = _call(kube_emulator, "PATCH", f"{DEPS}/churn-v1", patch, patch=True)
    assert code == 200 and patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)
    code, _, _, stale = _call(kube_emulator, "PATCH", f"{DEPS}/churn-v1", patch, patch=True)
    assert (code, stale["reason"]) == (409, "Conflict")
    assert "the object has been modified" in stale["message"]


@pytest.mark.parametrize(
    ("path", "edit", "field"),
    [
        (SVCS, lambda o: o["metadata"].update(name="9churn"), "metadata.name"),
        (DEPS, lambda o: o["metadata"].update(name="Churn_v1"), "metadata.name"),
        (DEPS, lambda o: o["spec"].update(replicas="one"), "spec.replicas"),
        (DEPS, lambda o: o["spec"].update(replicaz=1), "spec"),
    ],
)
def test_invalid_writes_are_422(
    kube_emulator: KubeEmulator, path: str, edit: Any, field: str
) -> None:
    obj = (
        render_service(_state())
        if path == SVCS
        else render_deployment(_state(), _state().versions[0])
    )
    edit(obj)
    code, _, _, status = _call(kube_emulator, "POST", path, obj)
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == field
    assert kube_emulator.writes()[-1][0] == "POST"  # seen, but nothing was stored
    assert (
        kube_emulator.live("v1/services") == [] and kube_emulator.live("apps/v1/deployments") == []
    )


def test_injected_429_carries_retry_after(kube_emulator: KubeEmulator) -> None:
    kube_emulator.run(
        lambda: kube_emulator.kmock.fail_next("GET", "deployments", 429, retry_after="1")
    )
    req = urllib.request.Request(kube_emulator.url + DEPS)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert (info.value.code, info.value.headers["Retry-After"]) == (429, "1")
    assert _call(kube_emulator, "GET", DEPS)[0] == 200  # once only
