"""mlshift's API calls work the same with every supported ``kubernetes`` client.

``make test`` runs every ``tests/integration/test_kube_*.py`` twice: with the newest client in
.venv and with the lowest one pyproject.toml allows (``make test-kube-lowest``). These tests
pin down what the portable request path must keep: the kubeconfig's bearer token on every
request, JSON in and out, the field manager on writes, a ``Status`` turned into ``APIError``.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlshift._exceptions import APIError, APINotFoundError
from mlshift._render import render_service
from mlshift._state import EndpointState
from mlshift.kube import Kubernetes
from mlshift.kube._api import DEPLOYMENTS, SERVICES
from tests.fixtures.kube import KubeEmulator


def _target(emu: KubeEmulator) -> Kubernetes:
    return Kubernetes(kubeconfig=str(emu.kubeconfig), progress=False)


def test_calls_carry_the_token_and_round_trip_json(kube_emulator: KubeEmulator) -> None:
    api = _target(kube_emulator).api
    service = render_service(EndpointState("churn", "ml"))
    created = api.create(SERVICES, "ml", service)
    assert created["metadata"]["resourceVersion"]
    patched = api.patch(SERVICES, "ml", "churn", {"metadata": {"labels": {"team": "ml"}}})
    assert patched["metadata"]["labels"]["team"] == "ml"
    assert api.get(SERVICES, "ml", "churn")["spec"] == service["spec"]
    assert [s["metadata"]["name"] for s in api.list_objects(SERVICES, "ml")] == ["churn"]
    assert api.delete(SERVICES, "ml", "churn") is True

    requests = kube_emulator.run(lambda: list(kube_emulator.kmock))
    assert requests, "no request reached the emulator"
    assert all(r.headers.get("Authorization") == "Bearer not-checked" for r in requests)
    writes = [r for r in requests if str(r.method.value).upper() in ("POST", "PATCH")]
    assert all(r.params.get("fieldManager") == "mlshift" for r in writes)


def test_a_status_error_becomes_an_api_error(kube_emulator: KubeEmulator) -> None:
    api = _target(kube_emulator).api
    with pytest.raises(APINotFoundError) as missing:
        api.get(DEPLOYMENTS, "ml", "nope")
    assert missing.value.code == 404
    bad: dict[str, Any] = render_service(EndpointState("churn", "ml"))
    bad["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(APIError) as invalid:
        api.create(SERVICES, "ml", bad)
    assert invalid.value.code == 422
    assert "DNS-1035" in str(invalid.value)
