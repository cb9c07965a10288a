"""Weights that would do nothing, seen on the Kubernetes API (kmock, tests/fixtures/kube.py).

The counterpart's injector gives pods labelled for injection an ``istio-proxy``; with
injection off, the version is ready yet ``ep.status()`` carries a warning naming the pod
and the fix (and the ``mlshift`` logger says it once). Gateways given to the target are
written with ``mesh``.
"""

from __future__ import annotations

import hashlib
import logging

import pytest

from mlshift._endpoint import Endpoint
from mlshift._plan import plan_change
from mlshift._state import EndpointState, VersionSpec
from tests.fixtures.kube import KubeEmulator, emulator_target

VS = "networking.istio.io/v1/virtualservices"


_target = emulator_target


def _spec(version: str) -> VersionSpec:
    sha = hashlib.sha256(version.encode()).hexdigest()
    return VersionSpec(version, sha, image=f"registry.test/ml/churn@sha256:{sha}")


def test_injected_pods_have_no_warning(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, gateways=["istio-system/public"]).engine("churn")
    state = EndpointState("churn", "ml", gateways=("istio-system/public",))
    state = state.with_version(_spec("v1"))
    engine.execute(plan_change(None, state))
    status = engine.status(state)["v1"]
    assert (status.ready, status.warning) == (True, "")
    vs = kube_emulator.obj(VS, "churn")
    assert vs is not None
    assert vs["spec"]["gateways"] == ["istio-system/public", "mesh"]


def test_pods_without_proxy_warn_in_status_and_log(
    kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    kube_emulator.sidecar_injection = False
    ep = Endpoint("churn", _target(kube_emulator))
    engine = ep.engine
    state = EndpointState("churn", "ml").with_version(_spec("v1"))
    engine.execute(plan_change(None, state))
    with caplog.at_level(logging.WARNING, logger="mlshift"):
        frame = ep.status()
        ep.status()
    assert bool(frame.loc["v1", "ready"]) is True
    warning = str(frame.loc["v1", "warning"])
    assert "runs without the istio-proxy sidecar" in warning
    assert "kubectl label namespace ml istio-injection=enabled" in warning
    logged = [r for r in caplog.records if "istio-proxy" in r.getMessage()]
    assert len(logged) == 1  # said once, not at every status() call


def test_an_older_virtual_service_on_the_host_is_a_warning(kube_emulator: KubeEmulator) -> None:
    kube_emulator.put(
        VS,
        "legacy",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {
                "name": "legacy",
                "namespace": "ml",
                "creationTimestamp": "2020-01-01T00:00:00Z",
            },
            "spec": {
                "hosts": ["churn.ml.svc.cluster.local"],
                "http": [{"route": [{"destination": {"host": "churn"}}]}],
            },
        },
    )
    engine = _target(kube_emulator).engine("churn")
    state = EndpointState("churn", "ml").with_version(_spec("v1"))
    engine.execute(plan_change(None, state))
    warning = engine.status(state)["v1"].warning
    assert "VirtualService ml/legacy also claims host churn and is older" in warning
    assert "runs without" not in warning  # the pods have their proxies
