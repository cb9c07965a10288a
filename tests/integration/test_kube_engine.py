"""The Kubernetes engine over HTTP against kmock's KubernetesEmulator (tests/fixtures/kube.py).

Covers the API flows with the official ``kubernetes`` client: first deploy, a second version,
shift, promote, rollback with the history read back by a fresh engine (a second notebook),
remove, delete, a readiness failure that leaves routing untouched, a foreign route kept
across shifts, a 409 Conflict then success (and too many of them), and the order of writes
as the emulator received them. Plans come from the real planner (``plan_change``), built
the way the facade builds them; one test drives the facade itself.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

import pytest
import yaml

from mlshift._exceptions import (
    APIError,
    ConfigError,
    ConflictError,
    NotReadyError,
)
from mlshift._plan import plan_change, plan_delete
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState, VersionSpec
from mlshift.kube import Kubernetes
from mlshift.kube._engine import HISTORY_ANNOTATION, KubernetesEngine
from tests.fixtures.kube import KubeEmulator

VS = "networking.istio.io/v1/virtualservices"
DR = "networking.istio.io/v1/destinationrules"
DEP = "apps/v1/deployments"


def _target(emu: KubeEmulator, **kwargs: Any) -> Kubernetes:
    options: dict[str, Any] = {"progress": False, "poll_interval": 0.02, "rollout_timeout": 10}
    options.update(kwargs)
    return Kubernetes(kubeconfig=str(emu.kubeconfig), registry="registry.test/ml", **options)


def _spec(version: str, image: str | None = None) -> VersionSpec:
    sha = hashlib.sha256(version.encode()).hexdigest()
    return VersionSpec(
        version, model_sha256=sha, image=image or f"registry.test/ml/churn@sha256:{sha}"
    )


def _deploy(engine: KubernetesEngine, spec: VersionSpec) -> EndpointState:
    """What ``ep.deploy`` does once the image is pushed: plan from the live state, execute."""
    loaded = engine.load("churn")
    old, history = loaded if loaded else (None, ())
    base = old or EndpointState("churn", namespace="ml")
    plan = plan_change(old, base.with_version(spec), history=history)
    engine.execute(plan)
    return plan.state


def _route(engine: KubernetesEngine, traffic: TrafficState, *, rollback: bool = False) -> None:
    """What ``shift``/``promote`` (push the old split) and ``rollback`` (pop it) do."""
    loaded = engine.load("churn")
    assert loaded is not None
    state, history = loaded
    history = history[:-1] if rollback else (*history, state.traffic)
    engine.execute(plan_change(state, state.with_traffic(traffic), history=history))


def _weights(emu: KubeEmulator) -> dict[str, int]:
    vs = emu.obj(VS, "churn")
    assert vs is not None
    main = next(r for r in vs["spec"]["http"] if r["name"] == "mlshift")
    return {d["destination"]["subset"]: d["weight"] for d in main["route"]}


def _subsets(emu: KubeEmulator) -> list[str]:
    dr = emu.obj(DR, "churn")
    assert dr is not None
    return [s["name"] for s in dr["spec"]["subsets"]]


def test_first_deploy_writes_in_order_and_reads_back(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    assert engine.load("churn") is None

    state = _deploy(engine, _spec("v1"))

    assert kube_emulator.writes() == [
        ("POST", "deployments", "churn-v1"),
        ("POST", "services", "churn"),
        ("POST", "destinationrules", "churn"),
        ("POST", "virtualservices", "churn"),
    ]
    loaded = engine.load("churn")
    assert loaded == (state, ())
    status = engine.status(state)["v1"]
    assert (status.ready, status.weight, status.ready_replicas) == (True, 100, 1)
    dep = kube_emulator.obj(DEP, "churn-v1")
    assert dep is not None
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlshift"


def test_second_version_adds_subset_before_route(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    before = len(kube_emulator.writes())

    _deploy(engine, _spec("v2"))

    writes = kube_emulator.writes()[before:]
    # DestinationRule: POST answers 409 AlreadyExists, then a merge patch (never PUT).
    assert writes == [
        ("POST", "deployments", "churn-v2"),
        ("POST", "destinationrules", "churn"),
        ("PATCH", "destinationrules", "churn"),
        ("PATCH", "virtualservices", "churn"),
    ]
    assert _subsets(kube_emulator) == ["v1", "v2"]
    assert _weights(kube_emulator) == {"v1": 100, "v2": 0}
    query = [r.params for r in kube_emulator.run(lambda: list(kube_emulator.kmock))]
    assert all(p.get("fieldManager") == "mlshift" for p in query if "fieldManager" in p)
    assert sum("fieldManager" in p for p in query) == len(kube_emulator.writes())


def test_shift_promote_rollback_history_seen_by_second_notebook(
    kube_emulator: KubeEmulator,
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))

    _route(engine, TrafficState({"v1": 90, "v2": 10}))
    assert _weights(kube_emulator) == {"v1": 90, "v2": 10}
    _route(engine, TrafficState({"v2": 100, "v1": 0}))
    assert _weights(kube_emulator) == {"v1": 0, "v2": 100}

    second = _target(kube_emulator).engine("churn")  # a second notebook: nothing in memory
    loaded = second.load("churn")
    assert loaded is not None
    state, history = loaded
    assert [dict(t.weights) for t in history] == [{"v1": 100, "v2": 0}, {"v1": 90, "v2": 10}]
    assert dict(state.traffic.weights) == {"v1": 0, "v2": 100}

    _route(second, history[-1], rollback=True)
    assert _weights(kube_emulator) == {"v1": 90, "v2": 10}
    reloaded = engine.load("churn")
    assert reloaded is not None
    assert [dict(t.weights) for t in reloaded[1]] == [{"v1": 100, "v2": 0}]
    vs = kube_emulator.obj(VS, "churn")
    assert vs is not None
    assert json.loads(vs["metadata"]["annotations"][HISTORY_ANNOTATION])[0]["weights"] == {
        "v1": 100,
        "v2": 0,
    }


def test_header_routes_mirror_and_foreign_route_survive_shifts(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    # Someone adds their own route (and a host) to the VirtualService, before mlshift's.
    vs = kube_emulator.obj(VS, "churn")
    assert vs is not None
    admin = {
        "name": "admin",
        "match": [{"uri": {"prefix": "/admin"}}],
        "route": [{"destination": {"host": "admin-svc"}}],
    }
    vs["spec"]["http"].insert(0, admin)
    vs["spec"]["hosts"].append("churn.example.com")
    kube_emulator.put(VS, "churn", vs)

    traffic = TrafficState(
        {"v1": 80, "v2": 20},
        headers=(HeaderRoute("v2", "x-canary", "yes"),),
        mirror=Mirror("v2", 25.0),
    )
    _route(engine, traffic)
    _route(engine, dataclasses.replace(traffic, weights={"v1": 50, "v2": 50}))

    live = kube_emulator.obj(VS, "churn")
    assert live is not None
    assert [r["name"] for r in live["spec"]["http"]] == ["admin", "mlshift-header-0", "mlshift"]
    assert live["spec"]["http"][0] == admin
    assert "churn.example.com" in live["spec"]["hosts"]
    loaded = engine.load("churn")
    assert loaded is not None
    assert loaded[0].traffic == dataclasses.replace(traffic, weights={"v1": 50, "v2": 50})


def test_conflict_then_success_keeps_the_other_writers_change(kube_emulator: KubeEmulator) -> None:
    import kmock

    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    vs = kube_emulator.obj(VS, "churn")
    assert vs is not None
    vs["metadata"]["resourceVersion"] = "1"
    kube_emulator.put(VS, "churn", vs)
    handler = kube_emulator.kmock
    other = {"name": "other", "route": [{"destination": {"host": "other-svc"}}]}

    def conflict(request: Any) -> dict[str, Any]:
        # A real API server refuses the write because resourceVersion "1" is stale: another
        # notebook has just written version "2". kmock stores the patch before reactions
        # run, so put back what the other writer left.
        stored = handler.objects[VS, "ml", "churn"]
        theirs = copy.deepcopy(stored.history[-2].raw)
        theirs["metadata"]["resourceVersion"] = "2"
        theirs["spec"]["http"].append(other)
        stored.history.append(theirs)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 409,
            "reason": "Conflict",
            "message": "the object has been modified",
        }

    patches = handler["patch", kmock.resource("networking.istio.io", "v1", "virtualservices")]
    seen = kube_emulator.run(lambda: len(patches))
    kube_emulator.run(lambda: patches[seen : seen + 1] << 409 << conflict)  # the next one only

    _route(engine, TrafficState({"v1": 70, "v2": 30}))

    bodies = kube_emulator.patches("virtualservices")[-2:]
    assert [b["metadata"]["resourceVersion"] for b in bodies] == ["1", "2"]
    live = kube_emulator.obj(VS, "churn")
    assert live is not None
    assert other in live["spec"]["http"]
    assert _weights(kube_emulator) == {"v1": 70, "v2": 30}


def test_endless_conflicts_raise_conflict_error(kube_emulator: KubeEmulator) -> None:
    import kmock

    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    engine = KubernetesEngine(
        "churn", engine.api, dataclasses.replace(engine.settings, conflict_attempts=3)
    )
    resource = kmock.resource("networking.istio.io", "v1", "virtualservices")
    kube_emulator.run(lambda: kube_emulator.kmock["patch", resource] << 409 << {"code": 409})
    before = len(kube_emulator.patches("virtualservices"))

    with pytest.raises(ConflictError, match="kept changing"):
        _route(engine, TrafficState({"v1": 50, "v2": 50}))
    assert len(kube_emulator.patches("virtualservices")) - before == 3


def test_readiness_failure_names_the_reason_and_leaves_routing(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    vs_before, dr_before = kube_emulator.obj(VS, "churn"), kube_emulator.obj(DR, "churn")
    before = len(kube_emulator.writes())

    with pytest.raises(NotReadyError, match="ImagePullBackOff") as info:
        _deploy(engine, _spec("v2", image="registry.test/ml/churn-broken@sha256:" + "0" * 64))

    assert info.value.reason == "ImagePullBackOff"
    assert "churn-v2" in str(info.value)
    assert kube_emulator.writes()[before:] == [("POST", "deployments", "churn-v2")]
    assert (kube_emulator.obj(VS, "churn"), kube_emulator.obj(DR, "churn")) == (
        vs_before,
        dr_before,
    )
    loaded = engine.load("churn")  # the failed version is not part of the endpoint
    assert loaded is not None
    assert loaded[0].version_names == ["v1"]


def test_unschedulable_is_reported_at_the_timeout(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, rollout_timeout=0.3).engine("churn")
    with pytest.raises(NotReadyError, match="Unschedulable: 0/3 nodes") as info:
        _deploy(engine, _spec("v1", image="registry.test/ml/unschedulable@sha256:" + "1" * 64))
    assert "within" in str(info.value)
    assert kube_emulator.obj(VS, "churn") is None


def test_remove_routes_first_then_subset_then_deployment(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    _route(engine, TrafficState({"v1": 0, "v2": 100}))
    loaded = engine.load("churn")
    assert loaded is not None
    state, history = loaded
    before = len(kube_emulator.writes())

    engine.execute(plan_change(state, state.without_version("v1"), history=history))

    assert kube_emulator.writes()[before:] == [
        ("PATCH", "virtualservices", "churn"),
        ("POST", "destinationrules", "churn"),
        ("PATCH", "destinationrules", "churn"),
        ("DELETE", "deployments", "churn-v1"),
    ]
    assert _subsets(kube_emulator) == ["v2"]
    assert _weights(kube_emulator) == {"v2": 100}
    assert kube_emulator.obj(DEP, "churn-v1") is None


def test_delete_removes_everything_in_order_and_sweeps_failures(
    kube_emulator: KubeEmulator,
) -> None:
    engine = _target(kube_emulator).engine("churn")
    state = _deploy(engine, _spec("v1"))
    with pytest.raises(NotReadyError):
        _deploy(engine, _spec("v2", image="registry.test/ml/broken@sha256:" + "2" * 64))
    before = len(kube_emulator.writes())

    engine.execute(plan_delete(state))

    assert kube_emulator.writes()[before:] == [
        ("DELETE", "virtualservices", "churn"),
        ("DELETE", "destinationrules", "churn"),
        ("DELETE", "services", "churn"),
        ("DELETE", "deployments", "churn-v1"),
        ("DELETE", "deployments", "churn-v2"),  # the failed rollout, swept
    ]
    assert engine.load("churn") is None
    engine.execute(plan_delete(state))  # deleting again: every 404 is fine


@pytest.mark.slow
def test_facade_flow_on_the_emulator(kube_emulator: KubeEmulator, tmp_path: Any) -> None:
    """``mlshift.endpoint(..., target=Kubernetes(...))`` end to end, images aside.

    The image seam is replaced (``prepare_version`` names a digest instead of building and
    pushing, which the image tests cover against a real registry); every Kubernetes call is
    real HTTP to the emulator.
    """
    from mlshift._bundle import BundleInfo
    from mlshift._endpoint import Endpoint

    class Prebuilt(Kubernetes):
        def prepare_version(
            self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
        ) -> VersionSpec:
            return dataclasses.replace(_spec(version), model_sha256=bundle.sha256)

    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [0, 1, 0, 1]
    ep = Endpoint("churn", Prebuilt(**_kwargs(kube_emulator)))
    ep.deploy(LogisticRegression().fit(X, y), "v1")
    ep.deploy(LogisticRegression(C=0.5).fit(X, y), "v2")
    ep.shift({"v1": 90, "v2": 10})
    ep.promote("v2")
    assert _weights(kube_emulator) == {"v1": 0, "v2": 100}

    second = Endpoint("churn", Prebuilt(**_kwargs(kube_emulator)))
    # deploy(v2) added v2 at 0 %, a traffic change too: the facade keeps it in the history.
    assert second.history() == [{"v1": 100}, {"v1": 100, "v2": 0}, {"v1": 90, "v2": 10}]
    second.rollback()
    assert _weights(kube_emulator) == {"v1": 90, "v2": 10}
    status = second.status()
    assert list(status.index) == ["v1", "v2"]
    assert bool(status.loc["v2", "ready"])
    assert second.url == "http://churn.ml.svc.cluster.local"


def _kwargs(emu: KubeEmulator) -> dict[str, Any]:
    return {
        "kubeconfig": str(emu.kubeconfig),
        "registry": "registry.test/ml",
        "progress": False,
        "poll_interval": 0.02,
        "rollout_timeout": 10,
    }


def test_unreachable_api_names_the_server(tmp_path: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        encoding="utf-8",
    )
    engine = Kubernetes(kubeconfig=str(config), progress=False).engine("churn")
    with pytest.raises(APIError, match=f"127.0.0.1:{port}") as info:
        engine.load("churn")
    assert info.value.code == 0


def test_no_cluster_is_a_config_error_only_when_used(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "MLSHIFT_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    target = Kubernetes(progress=False, service_account_dir=tmp_path / "sa")
    engine = target.engine("churn")  # no cluster needed to build it
    assert target.namespace() == "default"
    with pytest.raises(ConfigError, match="no Kubernetes cluster found"):
        engine.load("churn")


def test_dry_runs_need_no_cluster(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy, deploy, shift with dry_run=True, then render(): a canary's manifests, no API."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    from mlshift._endpoint import Endpoint

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "MLSHIFT_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [0, 1, 0, 1]
    target = Kubernetes(registry="registry.example.com/ml", service_account_dir=tmp_path / "sa")
    ep = Endpoint("churn", target)
    ep.deploy(LogisticRegression().fit(X, y), "v1", dry_run=True)
    ep.deploy(LogisticRegression(C=0.5).fit(X, y), "v2", dry_run=True)
    plan = ep.shift({"v1": 90, "v2": 10}, dry_run=True)
    assert [s.action for s in plan.steps] == ["patch-routes"]
    docs = [d for d in yaml.safe_load_all(ep.render()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Deployment", "Deployment", "Service", "DestinationRule", "VirtualService"]
    images = [d["spec"]["template"]["spec"]["containers"][0]["image"] for d in docs[:2]]
    assert images == [
        "registry.example.com/ml/churn:churn-v1",
        "registry.example.com/ml/churn:churn-v2",
    ]
    weights = {
        r["destination"]["subset"]: r["weight"] for r in docs[-1]["spec"]["http"][-1]["route"]
    }
    assert weights == {"v1": 90, "v2": 10}
    assert all(d["metadata"]["namespace"] == "default" for d in docs)
