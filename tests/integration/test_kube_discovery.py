"""Istio's API version is discovered per cluster; a cluster without Istio is a ConfigError.

Against the strict counterpart serving what a real cluster serves: Istio 1.21 has no
``networking.istio.io/v1`` (only v1beta1 and v1alpha3), a cluster without Istio has none,
and an unserved path gets a plain-text 404 that says nothing about any object.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlshift._exceptions import APIError, APINotFoundError, ConfigError
from mlshift._plan import plan_delete
from mlshift._state import TrafficState
from mlshift.kube import Kubernetes
from mlshift.kube._api import VIRTUAL_SERVICES
from tests.fixtures.kube import KubeEmulator
from tests.fixtures.kube_strict import ISTIO_1_21, NO_ISTIO
from tests.integration.test_kube_engine import _deploy, _route, _spec, _target, _weights


def _istio_paths(emu: KubeEmulator) -> list[str]:
    requests = emu.run(lambda: list(emu.kmock))
    return [str(r.url.path) for r in requests if "networking.istio.io" in str(r.url.path)]


def test_istio_1_21_is_driven_through_v1beta1(kube_emulator: KubeEmulator) -> None:
    kube_emulator.serve(ISTIO_1_21)
    target = _target(kube_emulator)
    engine = target.engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    _route(engine, TrafficState({"v1": 80, "v2": 20}))

    assert _weights(kube_emulator) == {"v1": 80, "v2": 20}
    paths = _istio_paths(kube_emulator)
    assert paths and all("/networking.istio.io/v1beta1/" in p or p.endswith(".io") for p in paths)
    assert not [p for p in paths if "/networking.istio.io/v1/" in p]
    vs = kube_emulator.obj("networking.istio.io/v1/virtualservices", "churn")  # storage key
    assert vs is not None and vs["apiVersion"] == "networking.istio.io/v1beta1"
    # Discovered once per target, however many engines and calls use it.
    target.engine("churn").load("churn")
    discovery = [p for p in _istio_paths(kube_emulator) if p == "/apis/networking.istio.io"]
    assert discovery == ["/apis/networking.istio.io"]


def test_no_istio_is_a_config_error_before_anything_is_applied(
    kube_emulator: KubeEmulator,
) -> None:
    kube_emulator.serve(NO_ISTIO)
    engine = _target(kube_emulator).engine("churn")
    with pytest.raises(ConfigError, match="Istio or its CRDs are missing"):
        _deploy(engine, _spec("v1"))
    assert kube_emulator.writes() == []
    assert kube_emulator.live("apps/v1/deployments") == []


def test_delete_without_istio_does_not_report_success(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, _spec("v1"))
    kube_emulator.serve(NO_ISTIO)  # someone uninstalled Istio (and its CRDs)
    fresh = _target(kube_emulator).engine("churn")
    with pytest.raises(ConfigError, match="Istio"):
        fresh.execute(plan_delete(state))
    assert kube_emulator.obj("apps/v1/deployments", "churn-v1") is not None


def test_a_plain_404_is_not_a_missing_object(kube_emulator: KubeEmulator) -> None:
    kube_emulator.serve(ISTIO_1_21)
    api: Any = Kubernetes(kubeconfig=str(kube_emulator.kubeconfig), progress=False).api
    with pytest.raises(APIError, match="does not serve") as info:
        api.get(VIRTUAL_SERVICES, "ml", "churn")  # hard-coded v1: not served on 1.21
    assert info.value.code == 404
    assert not isinstance(info.value, APINotFoundError)
    with pytest.raises(APIError):
        api.delete(VIRTUAL_SERVICES, "ml", "churn")  # not "False: it was not there"
    assert api.served_versions("networking.istio.io") == ("v1beta1", "v1alpha3")
