"""mlshift takes over no object it does not manage (Service ``churn``, Deployment ``churn-v1``).

A create answered with 409 AlreadyExists used to be followed by an unconditional merge patch:
someone's ``churn`` Service got its selector overwritten, another team's ``churn-v1``
Deployment its image. Now an existing object without mlshift's managed-by label is refused
with a clear error before anything is written, and left as it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlshift._exceptions import DeployError
from mlshift._plan import plan_delete
from mlshift._state import EndpointState
from tests.fixtures.kube import KubeEmulator
from tests.integration.test_kube_engine import _deploy, _spec, _target


def _legacy_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "churn", "namespace": "ml", "labels": {"app": "legacy-churn"}},
        "spec": {
            "selector": {"app": "legacy-churn"},
            "ports": [{"name": "http", "port": 80, "targetPort": 9000}],
        },
    }


def _their_deployment() -> dict[str, Any]:
    labels = {"app": "churn", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn-v1", "namespace": "ml", "labels": {"team": "risk"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": "risk/churn:1.4"}]},
            },
        },
    }


def test_someone_elses_service_is_not_taken_over(kube_emulator: KubeEmulator) -> None:
    kube_emulator.put("v1/services", "churn", _legacy_service())
    before = kube_emulator.obj("v1/services", "churn")
    engine = _target(kube_emulator).engine("churn")
    with pytest.raises(DeployError, match=r"Service ml/churn .* not managed by mlshift"):
        _deploy(engine, _spec("v1"))
    assert kube_emulator.obj("v1/services", "churn") == before
    assert kube_emulator.writes() == []  # refused before the Deployment was applied


def test_someone_elses_deployment_is_not_taken_over(kube_emulator: KubeEmulator) -> None:
    kube_emulator.put("apps/v1/deployments", "churn-v1", _their_deployment())
    engine = _target(kube_emulator).engine("churn")
    with pytest.raises(DeployError, match=r"Deployment ml/churn-v1 .*kubectl -n ml label"):
        _deploy(engine, _spec("v1"))
    dep = kube_emulator.obj("apps/v1/deployments", "churn-v1")
    assert dep is not None
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "risk/churn:1.4"
    with pytest.raises(DeployError, match="not managed by mlshift"):
        engine.execute(plan_delete(EndpointState("churn", "ml").with_version(_spec("v1"))))
    assert kube_emulator.obj("apps/v1/deployments", "churn-v1") is not None


def test_mlshifts_own_service_is_updated(kube_emulator: KubeEmulator) -> None:
    """The label hands an object over: an earlier mlshift Service is patched as before."""
    service = _legacy_service()
    service["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "mlshift"
    kube_emulator.put("v1/services", "churn", service)
    _deploy(_target(kube_emulator).engine("churn"), _spec("v1"))
    live = kube_emulator.obj("v1/services", "churn")
    assert live is not None and live["spec"]["selector"] == {"app": "churn"}
