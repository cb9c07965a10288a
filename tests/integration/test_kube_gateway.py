"""Gateway API routing on the Kubernetes emulator: the safe order, the managed rules only,
409s and concurrent changes, rollback history, ``routing="auto"`` and ambient mode.

Every HTTPRoute the engine leaves in the emulator is checked against the Gateway API's CRD
(schema and CEL rules, ``tests/fixtures/gateway_api.py``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from mlshift._exceptions import ConflictError
from mlshift._plan import plan_change, plan_delete
from mlshift._render_gateway import render_http_route
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState, VersionSpec
from mlshift.kube import Kubernetes, rbac
from mlshift.kube._engine import HISTORY_ANNOTATION, KubernetesEngine
from tests.fixtures.gateway_api import validate_http_route
from tests.fixtures.kube import KubeEmulator, emulator_target
from tests.fixtures.kube_strict import GATEWAY_API, ISTIO_1_22

ROUTES = "gateway.networking.k8s.io/v1/httproutes"
SERVICES = "v1/services"


_target = emulator_target


def _spec(version: str) -> VersionSpec:
    sha = hashlib.sha256(version.encode()).hexdigest()
    return VersionSpec(version, model_sha256=sha, image=f"registry.test/ml/churn@sha256:{sha}")


def _deploy(engine: KubernetesEngine, spec: VersionSpec) -> EndpointState:
    loaded = engine.load("churn")
    old, history = loaded if loaded else (None, ())
    base = old or EndpointState("churn", namespace="ml", routing="gateway-api")
    plan = plan_change(old, base.with_version(spec), history=history)
    engine.execute(plan)
    return plan.state


def _route(engine: KubernetesEngine, traffic: TrafficState) -> EndpointState:
    loaded = engine.load("churn")
    assert loaded is not None
    state, history = loaded
    new = state.with_traffic(traffic)
    engine.execute(plan_change(state, new, history=(*history, state.traffic)))
    return new


def _live(emu: KubeEmulator) -> dict[str, Any]:
    route = emu.obj(ROUTES, "churn")
    assert route is not None
    assert validate_http_route(route) == []
    return route


def _weights(route: dict[str, Any]) -> dict[str, int]:
    main = next(r for r in route["spec"]["rules"] if r["name"] == "mlshift")
    return {b["name"]: b["weight"] for b in main["backendRefs"]}


def test_versions_get_service_then_weight_and_removal_runs_backwards(
    kube_emulator: KubeEmulator,
) -> None:
    engine = _target(kube_emulator, routing="gateway-api").engine("churn")
    assert engine.load("churn") is None
    _deploy(engine, _spec("v1"))
    assert kube_emulator.writes() == [
        ("POST", "deployments", "churn-v1"),
        ("POST", "services", "churn-v1"),
        ("POST", "services", "churn"),
        ("POST", "httproutes", "churn"),
    ]
    before = len(kube_emulator.writes())
    _deploy(engine, _spec("v2"))
    assert kube_emulator.writes()[before:] == [
        ("POST", "deployments", "churn-v2"),
        ("POST", "services", "churn-v2"),
        ("PATCH", "httproutes", "churn"),
    ]
    assert _weights(_live(kube_emulator)) == {"churn-v1": 100, "churn-v2": 0}
    loaded = engine.load("churn")
    assert loaded is not None
    state = loaded[0]
    assert (state.routing, state.version_names) == ("gateway-api", ["v1", "v2"])
    assert state.versions[1].image == _spec("v2").image
    before = len(kube_emulator.writes())
    _route(engine, TrafficState({"v1": 0, "v2": 100}))
    state = engine.load("churn")[0]  # type: ignore[index]
    engine.execute(plan_change(state, state.without_version("v1")))
    assert kube_emulator.writes()[before:] == [
        ("PATCH", "httproutes", "churn"),
        ("PATCH", "httproutes", "churn"),
        ("DELETE", "services", "churn-v1"),
        ("DELETE", "deployments", "churn-v1"),
    ]
    assert _weights(_live(kube_emulator)) == {"churn-v2": 100}
    before = len(kube_emulator.writes())
    engine.execute(plan_delete(engine.load("churn")[0]))  # type: ignore[index]
    assert kube_emulator.writes()[before:] == [
        ("DELETE", "httproutes", "churn"),
        ("DELETE", "services", "churn-v2"),
        ("DELETE", "services", "churn"),
        ("DELETE", "deployments", "churn-v2"),
    ]
    assert engine.load("churn") is None


def test_90_10_header_and_mirror_equal_the_virtual_service_form_and_foreign_rules_stay(
    kube_emulator: KubeEmulator,
) -> None:
    engine = _target(kube_emulator, routing="gateway-api").engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    route = _live(kube_emulator)
    foreign = {
        "name": "admin",
        "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
        "backendRefs": [{"name": "admin", "port": 80}],
    }
    route["spec"]["rules"].insert(0, foreign)
    route["spec"]["parentRefs"].append({"kind": "Gateway", "name": "public"})
    kube_emulator.put(ROUTES, "churn", route)
    traffic = TrafficState(
        {"v1": 90, "v2": 10},
        headers=(HeaderRoute("v2", "x-canary", "yes"),),  # names are read back lower-case
        mirror=Mirror("v2", 20.0),
    )
    state = _route(engine, traffic)
    live = _live(kube_emulator)
    assert live["spec"]["rules"][0] == foreign
    assert {"kind": "Gateway", "name": "public"} in live["spec"]["parentRefs"]
    assert live["spec"]["rules"][1:] == render_http_route(state)["spec"]["rules"]
    assert _weights(live) == {"churn-v1": 90, "churn-v2": 10}
    main = live["spec"]["rules"][-1]
    assert main["filters"][0]["requestMirror"]["percent"] == 20
    loaded = engine.load("churn")
    assert loaded is not None
    assert loaded[0].traffic == traffic
    assert [dict(t.weights) for t in loaded[1]][-1] == {"v1": 100, "v2": 0}
    assert HISTORY_ANNOTATION in live["metadata"]["annotations"]
    # A rollback reads the history a second notebook would see, from the HTTPRoute.
    other = _target(kube_emulator, routing="gateway-api").engine("churn")
    assert other.load("churn") == loaded


def test_rules_changed_since_read_or_a_409_is_a_conflict(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, routing="gateway-api").engine("churn")
    _deploy(engine, _spec("v1"))
    state = _deploy(engine, _spec("v2"))
    # Someone else moves the traffic between our read and our write.
    _route(
        _target(kube_emulator, routing="gateway-api").engine("churn"),
        TrafficState({"v1": 50, "v2": 50}),
    )
    before = len(kube_emulator.writes())
    with pytest.raises(ConflictError, match="changed since they were read"):
        engine.execute(plan_change(state, state.with_traffic(TrafficState({"v1": 0, "v2": 100}))))
    assert kube_emulator.writes()[before:] == []
    assert _weights(_live(kube_emulator)) == {"churn-v1": 50, "churn-v2": 50}
    state = engine.load("churn")[0]  # type: ignore[index]
    read = _live(kube_emulator)["metadata"]["resourceVersion"]

    def label_it() -> None:  # someone else's write to a field mlshift does not own
        label = lambda r: r["metadata"].setdefault("labels", {}).update(team="search")  # noqa: E731
        kube_emulator.edit_now(ROUTES, "churn", label)

    kube_emulator.race("PATCH", "httproutes", label_it)
    with pytest.raises(ConflictError, match="409"):
        engine.execute(plan_change(state, state.with_traffic(TrafficState({"v1": 0, "v2": 100}))))
    assert kube_emulator.patches("httproutes")[-1]["metadata"]["resourceVersion"] == read
    assert _weights(_live(kube_emulator)) == {"churn-v1": 50, "churn-v2": 50}


def _namespace(emu: KubeEmulator, labels: dict[str, str]) -> None:
    """Serve the namespace ``ml`` with ``labels`` (kmock keeps no cluster-scoped Namespaces:
    it reads ``/api/v1/namespaces/ml`` as the namespace ``ml``, so the answer is scripted)."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml", "labels": labels}}
    emu.run(lambda: emu.kmock["get", "/api/v1/namespaces/ml"] << body)


def test_auto_picks_the_gateway_api_for_an_ambient_namespace_and_warns_without_waypoint(
    kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    _namespace(kube_emulator, {"istio.io/dataplane-mode": "ambient"})
    with caplog.at_level(logging.WARNING, logger="mlshift.kube"):
        found = _target(kube_emulator).detect_routing("churn")
    assert (found.routing, found.ambient, found.waypoint) == ("gateway-api", True, None)
    assert "istioctl waypoint apply" in caplog.text
    assert "mlshift.waypoint" in found.warning


def test_auto_with_a_waypoint_does_not_warn(
    kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}
    _namespace(kube_emulator, labels)
    with caplog.at_level(logging.WARNING, logger="mlshift.kube"):
        found = _target(kube_emulator).detect_routing("churn")
    assert (found.routing, found.waypoint, found.warning) == ("gateway-api", "waypoint", "")
    assert caplog.text == ""


def test_auto_follows_an_existing_http_route_else_istio(kube_emulator: KubeEmulator) -> None:
    assert _target(kube_emulator).routing_for("churn") == "istio"
    theirs = render_http_route(EndpointState("churn", namespace="ml"))
    theirs["metadata"]["name"] = "churn-by-hand"
    kube_emulator.put(ROUTES, "churn-by-hand", theirs)
    assert _target(kube_emulator).routing_for("churn") == "gateway-api"
    assert _target(kube_emulator).routing_for("fraud") == "istio"


def test_auto_is_istio_where_the_cluster_serves_no_http_route(kube_emulator: KubeEmulator) -> None:
    _namespace(kube_emulator, {"istio.io/dataplane-mode": "ambient"})
    kube_emulator.serve(ISTIO_1_22 - GATEWAY_API)  # Istio without the Gateway API's CRDs
    found = _target(kube_emulator).detect_routing("churn")
    assert found.routing == "istio"
    assert "serves no" in found.reason


def test_rbac_for_the_gateway_api_grants_exactly_the_verbs_its_flows_use(
    kube_emulator: KubeEmulator,
) -> None:
    from mlshift._exceptions import NotReadyError
    from mlshift._render import render_service

    service = render_service(EndpointState("churn", "ml"))  # made beforehand by someone
    kube_emulator.put(SERVICES, "churn", service)
    engine = _target(kube_emulator, routing="gateway-api").engine("churn")
    impatient = _target(kube_emulator, routing="gateway-api", rollout_timeout=0.2)
    forbidden = "registry.test/ml/forbidden@sha256:" + "6" * 64
    with pytest.raises(NotReadyError, match="FailedCreate"):
        _deploy(impatient.engine("churn"), VersionSpec("v1", image=forbidden))
    _deploy(engine, _spec("v1"))
    state = _deploy(engine, _spec("v2"))
    _route(engine, TrafficState({"v1": 50, "v2": 50}))
    engine.status(state)
    loaded = engine.load("churn")
    assert loaded is not None
    _route(engine, TrafficState({"v1": 0, "v2": 100}))
    state = engine.load("churn")[0]  # type: ignore[index]
    engine.execute(plan_change(state, state.without_version("v1")))
    engine.execute(plan_delete(engine.load("churn")[0]))  # type: ignore[index]
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}

    def used() -> set[tuple[str, str, str]]:
        out = set()
        for req in list(kube_emulator.kmock):
            if req.resource is None or not req.resource.plural:
                continue  # discovery (/apis/<group>): every authenticated user may read it
            method = str(req.method.value).upper()
            verb = verbs.get(method) or ("get" if req.name else "list")
            out.add((req.resource.group, req.resource.plural, verb))
        return out

    role = rbac("ml", routing="gateway-api")[0]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # pods/proxy is for ep.compare (the request journals); events explain a version that is
    # not ready without a condition saying why (this flow's failure has ReplicaFailure).
    assert kube_emulator.run(used) == granted - {("", "pods/proxy", "get"), ("", "events", "list")}
    assert not any(r in {"virtualservices", "destinationrules"} for _, r, _ in granted)


def test_facade_on_an_ambient_namespace_routes_by_http_route_with_rollback(
    kube_emulator: KubeEmulator,
) -> None:
    """``routing="auto"`` end to end through the facade, images aside (as in test_kube_engine)."""
    import dataclasses

    from mlshift import Endpoint
    from mlshift._bundle import BundleInfo

    class Prebuilt(Kubernetes):
        def prepare_version(
            self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
        ) -> VersionSpec:
            return dataclasses.replace(_spec(version), model_sha256=bundle.sha256)

    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    labels = {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}
    _namespace(kube_emulator, labels)
    options = {"kubeconfig": str(kube_emulator.kubeconfig), "registry": "registry.test/ml"}
    options |= {"progress": False, "poll_interval": 0.02, "rollout_timeout": 10}
    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [0, 1, 0, 1]
    ep = Endpoint("churn", Prebuilt(**options))
    ep.deploy(LogisticRegression().fit(X, y), "v1")
    ep.deploy(LogisticRegression(C=0.5).fit(X, y), "v2")
    ep.shift({"v1": 90, "v2": 10})
    ep.promote("v2")
    assert _weights(_live(kube_emulator)) == {"churn-v1": 0, "churn-v2": 100}
    assert kube_emulator.obj("networking.istio.io/v1/virtualservices", "churn") is None
    assert "via gateway-api" in repr(ep)
    second = Endpoint("churn", Prebuilt(**options))
    second.rollback()
    assert _weights(_live(kube_emulator)) == {"churn-v1": 90, "churn-v2": 10}
    assert second.status().attrs["routing"] == "gateway-api"


def test_metrics_read_the_waypoint_in_an_ambient_namespace(kube_emulator: KubeEmulator) -> None:
    _namespace(kube_emulator, {"istio.io/dataplane-mode": "ambient"})
    ambient = _target(kube_emulator, routing="gateway-api").engine("churn").settings.ambient
    assert ambient is not None and ambient()
    sidecars = _target(kube_emulator, routing="gateway-api", ambient=False).engine("churn")
    assert sidecars.settings.ambient is not None and not sidecars.settings.ambient()
