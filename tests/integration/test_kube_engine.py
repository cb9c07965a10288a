"""The Kubernetes engine over HTTP against kmock's KubernetesEmulator (tests/fixtures/kube.py).

Covers the API flows with the official ``kubernetes`` client: first deploy, a second version,
shift, promote, rollback with the history read back by a fresh engine (a second notebook),
remove, delete, a readiness failure that leaves routing untouched, a foreign route kept
across shifts, a 409 Conflict then success through the facade's retry (and too many of
them), and the order of writes as the emulator received them. Plans come from the real
planner (``plan_change``), built the way the facade builds them; a few tests drive the
facade itself.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from typing import Any

import pytest
import yaml

from mlshift._endpoint import Endpoint
from mlshift._exceptions import (
    APIError,
    ConfigError,
    ConflictError,
    NotReadyError,
)
from mlshift._plan import plan_change, plan_delete
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState, VersionSpec
from mlshift._traffic import CONFLICT_DEADLINE_S
from mlshift.kube import Kubernetes
from mlshift.kube._engine import HISTORY_ANNOTATION, KubernetesEngine
from tests.fixtures.kube import KubeEmulator, emulator_target

VS = "networking.istio.io/v1/virtualservices"
DR = "networking.istio.io/v1/destinationrules"
DEP = "apps/v1/deployments"


def _target(emu: KubeEmulator, **kwargs: Any) -> Kubernetes:
    return emulator_target(emu, **{"settle_time": 0.02, **kwargs})


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
    # DestinationRule: read, then a merge patch of its subsets with that resourceVersion.
    assert writes == [
        ("POST", "deployments", "churn-v2"),
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
    assert [r["name"] for r in live["spec"]["http"]] == [
        "admin",
        "mlshift-version-v1",
        "mlshift-version-v2",
        "mlshift-header-0",
        "mlshift",
    ]
    assert live["spec"]["http"][0] == admin
    assert "churn.example.com" in live["spec"]["hosts"]
    loaded = engine.load("churn")
    assert loaded is not None
    assert loaded[0].traffic == dataclasses.replace(traffic, weights={"v1": 50, "v2": 50})


def test_conflict_then_success_keeps_the_other_writers_change(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    other = {"name": "other", "route": [{"destination": {"host": "other-svc"}}]}
    theirs: list[str] = []

    def other_writer() -> None:
        # Another notebook writes the VirtualService between mlshift's read and its write:
        # mlshift's resourceVersion is stale and the API server answers 409 Conflict.
        edit = lambda vs: vs["spec"]["http"].append(other)  # noqa: E731
        theirs.append(kube_emulator.edit_now(VS, "churn", edit))

    kube_emulator.race("PATCH", "virtualservices", other_writer)

    # The engine raises ConflictError at once; the facade (the one retry layer) re-reads the
    # endpoint and writes again on top of the other writer's change.
    Endpoint("churn", _target(kube_emulator)).shift({"v1": 70, "v2": 30})

    bodies = kube_emulator.patches("virtualservices")[-2:]
    first, second = (b["metadata"]["resourceVersion"] for b in bodies)
    assert first != second and second == theirs[0]
    live = kube_emulator.obj(VS, "churn")
    assert live is not None
    assert other in live["spec"]["http"]
    assert _weights(kube_emulator) == {"v1": 70, "v2": 30}


def test_endless_conflicts_raise_conflict_error(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    touched = [0]

    def touch() -> None:
        # Someone keeps touching a field mlshift does not own, just before each write.
        touched[0] += 1
        edit = lambda vs: vs["metadata"].setdefault("labels", {}).update(touched=str(touched[0]))  # noqa: E731
        kube_emulator.edit_now(VS, "churn", edit)

    kube_emulator.race("PATCH", "virtualservices", touch, times=1000)
    before = len(kube_emulator.patches("virtualservices"))

    ep = Endpoint("churn", _target(kube_emulator))
    started = time.monotonic()
    with pytest.raises(ConflictError, match="keeps changing the routes"):
        ep.shift({"v1": 50, "v2": 50})
    took = time.monotonic() - started
    tries = len(kube_emulator.patches("virtualservices")) - before
    # One retry layer: the facade re-reads and retries until its deadline, no more (the
    # engine used to retry 5 times inside each of the facade's 4 attempts).
    assert tries >= 3
    assert took < CONFLICT_DEADLINE_S + 1.5
    assert _weights(kube_emulator) == {"v1": 100, "v2": 0}  # nothing half-applied


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
        "settle_time": 0.02,
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
        "registry.example.com/ml/churn:churn-v1@sha256:<resolved-at-deploy>",
        "registry.example.com/ml/churn:churn-v2@sha256:<resolved-at-deploy>",
    ]
    weights = {
        r["destination"]["subset"]: r["weight"] for r in docs[-1]["spec"]["http"][-1]["route"]
    }
    assert weights == {"v1": 90, "v2": 10}
    assert all(d["metadata"]["namespace"] == "default" for d in docs)


def test_a_failed_version_deploys_again_with_a_good_image(kube_emulator: KubeEmulator) -> None:
    """The broken rollout's ImagePullBackOff pod and stale ProgressDeadlineExceeded stay
    until the new pod is ready; neither may fail the retried deploy."""
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    with pytest.raises(NotReadyError, match="ImagePullBackOff"):
        _deploy(engine, _spec("v2", image="registry.test/ml/churn-broken@sha256:" + "3" * 64))
    failed = kube_emulator.obj(DEP, "churn-v2")
    assert failed is not None
    assert failed["status"]["conditions"][0]["reason"] == "ProgressDeadlineExceeded"
    broken_pods = [p["metadata"]["name"] for p in kube_emulator.live("v1/pods")]

    state = _deploy(engine, _spec("v2"))

    assert _subsets(kube_emulator) == ["v1", "v2"]
    assert _weights(kube_emulator) == {"v1": 100, "v2": 0}
    dep = kube_emulator.obj(DEP, "churn-v2")
    assert dep is not None and dep["metadata"]["generation"] == 2
    pods = [p["metadata"]["name"] for p in kube_emulator.live("v1/pods")]
    assert len(pods) == 2 and not {p for p in pods if p.startswith("churn-v2-")} & set(broken_pods)
    assert engine.status(state)["v2"].ready


def _someone_else_edits(emu: KubeEmulator, edit: str) -> dict[str, Any]:
    """Change the managed routes the way another notebook (or kubectl) would."""
    vs = emu.obj(VS, "churn")
    assert vs is not None
    main = next(r for r in vs["spec"]["http"] if r["name"] == "mlshift")
    if edit == "weights":
        for dest in main["route"]:
            dest["weight"] = 50
    else:  # a header rule sending testers to v2
        header = copy.deepcopy(main)
        header.update(name="mlshift-header-0", match=[{"headers": {"x-canary": {"exact": "1"}}}])
        header["route"] = [{**main["route"][1], "weight": 100}]
        vs["spec"]["http"].insert(0, header)
    return vs


@pytest.mark.parametrize("edit", ["weights", "header-rule"])
def test_managed_routes_changed_since_read_is_a_conflict_and_nothing_is_written(
    kube_emulator: KubeEmulator, edit: str
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    loaded = engine.load("churn")  # the facade reads the state ...
    assert loaded is not None
    state = loaded[0]
    theirs = _someone_else_edits(kube_emulator, edit)  # ... someone else moves the traffic ...
    kube_emulator.put(VS, "churn", theirs)
    theirs = kube_emulator.obj(VS, "churn")  # as stored: with its new resourceVersion
    before = len(kube_emulator.writes())

    plan = plan_change(state, state.with_traffic(TrafficState({"v1": 90, "v2": 10})))
    with pytest.raises(ConflictError, match=r"changed since they were read.*ep\.status\(\)"):
        engine.execute(plan)  # ... and the change computed from the old read is refused

    assert kube_emulator.writes()[before:] == []
    assert kube_emulator.obj(VS, "churn") == theirs


def test_409_from_a_managed_route_change_is_a_conflict(kube_emulator: KubeEmulator) -> None:
    """The other writer won the race (409); their change moved weights: recompute, not merge."""
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    theirs = _someone_else_edits(kube_emulator, "weights")
    kube_emulator.race(
        "PATCH", "virtualservices", lambda: kube_emulator.put_now(VS, "churn", theirs)
    )
    before = len(kube_emulator.patches("virtualservices"))

    with pytest.raises(ConflictError, match="changed since they were read"):
        _route(engine, TrafficState({"v1": 70, "v2": 30}))  # read again: their routes

    assert len(kube_emulator.patches("virtualservices")) - before == 1  # the facade retries
    assert _weights(kube_emulator) == {"v1": 50, "v2": 50}


def test_409_from_istiods_status_write_is_written_again(kube_emulator: KubeEmulator) -> None:
    """istiod marks a VirtualService Reconciled about a second after each change: that moves
    its resourceVersion, not its routes, so the routes are read and written again."""
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))

    def mark(body: dict[str, Any]) -> None:
        generation = body["metadata"]["generation"]
        condition = {"type": "Reconciled", "status": "True", "observedGeneration": generation}
        body["status"] = {"conditions": [condition]}

    kube_emulator.race(
        "PATCH", "virtualservices", lambda: kube_emulator.edit_now(VS, "churn", mark)
    )
    before = len(kube_emulator.patches("virtualservices"))

    _route(engine, TrafficState({"v1": 70, "v2": 30}))

    assert len(kube_emulator.patches("virtualservices")) - before == 2  # 409, then written
    assert _weights(kube_emulator) == {"v1": 70, "v2": 30}


def test_warning_events_of_another_version_are_not_reported(kube_emulator: KubeEmulator) -> None:
    """churn-v10's events start with "churn-v1" but are not churn-v1's."""
    import kmock

    handler = kube_emulator.kmock
    other = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "churn-v10-7d9f8b6c5-x2x4z.1", "namespace": "ml"},
        "type": "Warning",
        "reason": "BackOff",
        "message": "Back-off restarting failed container (not churn-v1's)",
        "involvedObject": {"kind": "Pod", "name": "churn-v10-7d9f8b6c5-x2x4z"},
        "lastTimestamp": "2999-01-01T00:00:00Z",
    }

    def emitted(request: Any) -> None:  # just now, by another version's kubelet
        handler.objects["v1/events", "ml", other["metadata"]["name"]] = other

    kube_emulator.run(lambda: handler["list", kmock.resource("", "v1", "events")] << emitted)
    engine = _target(kube_emulator, rollout_timeout=0.3).engine("churn")
    with pytest.raises(NotReadyError, match="FailedCreate: pods .* is forbidden") as info:
        _deploy(engine, _spec("v1", image="registry.test/ml/forbidden@sha256:" + "4" * 64))
    assert "not churn-v1's" not in str(info.value)
    assert info.value.reason == "FailedCreate"


def test_rbac_role_grants_exactly_the_verbs_the_flows_use(kube_emulator: KubeEmulator) -> None:
    from mlshift._render import render_service
    from mlshift.kube import rbac

    service = render_service(EndpointState("churn", "ml"))  # made beforehand by someone
    kube_emulator.put("v1/services", "churn", service)
    engine = _target(kube_emulator, routing="istio").engine("churn")
    impatient = _target(kube_emulator, rollout_timeout=0.2, routing="istio").engine("churn")
    with pytest.raises(NotReadyError, match="FailedCreate"):
        _deploy(impatient, _spec("v1", image="registry.test/ml/forbidden@sha256:" + "6" * 64))
    _deploy(engine, _spec("v1"))
    hasty = _target(kube_emulator, rollout_timeout=0.01).engine("churn")
    with pytest.raises(NotReadyError, match="within"):  # no reason yet: the events are read
        _deploy(hasty, _spec("v9"))
    with pytest.raises(NotReadyError):
        _deploy(engine, _spec("v2", image="registry.test/ml/broken@sha256:" + "5" * 64))
    state = _deploy(engine, _spec("v2"))
    _route(engine, TrafficState({"v1": 50, "v2": 50}))
    engine.status(state)
    loaded = engine.load("churn")
    assert loaded is not None
    engine.execute(plan_change(loaded[0], loaded[0].without_version("v1")))
    engine.execute(plan_delete(loaded[0]))
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}

    def used() -> set[tuple[str, str, str]]:
        out = set()
        for req in list(kube_emulator.kmock):
            if req.resource is None or not req.resource.plural:
                continue  # discovery (/apis/<group>): every authenticated user may read it
            method = str(req.method.value).upper()
            verb = verbs.get(method) or ("get" if req.name else "list")
            if req.params.get("watch"):
                verb = "watch"
            out.add((req.resource.group, req.resource.plural, verb))
        return out

    role = rbac("ml", routing="istio")[0]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # pods/proxy is for ep.compare (reading the request journals), not a routing flow.
    assert kube_emulator.run(used) == granted - {("", "pods/proxy", "get")}


def test_prometheus_token_and_headers_reach_prometheus() -> None:
    import http.server
    import threading

    seen: list[dict[str, str]] = []

    class Prometheus(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(dict(self.headers))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = Kubernetes(
            namespace="ml",
            prometheus_url=f"http://127.0.0.1:{server.server_address[1]}",
            prometheus_token="s3cret",
            prometheus_headers={"X-Scope-OrgID": "ml-team"},
        )
        assert (target.prometheus_token, target.prometheus_headers) == (
            "s3cret",
            {"X-Scope-OrgID": "ml-team"},
        )
        target.engine("churn").metrics(EndpointState("churn", "ml"), since=900, step=60)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert seen
    assert all(h.get("Authorization") == "Bearer s3cret" for h in seen)
    assert all(h.get("X-Scope-OrgID") == "ml-team" for h in seen)


def test_a_deployment_deleted_by_hand_can_be_routed_away_and_removed(
    kube_emulator: KubeEmulator, tmp_path: Any
) -> None:
    """Someone ran ``kubectl delete deployment churn-v1``: no endless conflicts, a clear way out."""
    from mlshift._bundle import BundleInfo
    from mlshift.kube._api import DEPLOYMENTS

    class Prebuilt(Kubernetes):
        def prepare_version(
            self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
        ) -> VersionSpec:
            return dataclasses.replace(_spec(version), model_sha256=bundle.sha256)

    from sklearn.linear_model import LogisticRegression

    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [0, 1, 0, 1]
    target = Prebuilt(**_kwargs(kube_emulator))
    ep = Endpoint("churn", target)
    ep.deploy(LogisticRegression().fit(X, y), "v1")
    ep.deploy(LogisticRegression(C=0.5).fit(X, y), "v2")
    ep.shift({"v1": 50, "v2": 50})
    assert target.api.delete(DEPLOYMENTS, "ml", "churn-v1")

    fresh = Endpoint("churn", Prebuilt(**_kwargs(kube_emulator)))
    status = fresh.status()
    assert not status.loc["v1", "ready"]
    assert "churn-v1 not found" in status.loc["v1", "reason"]
    fresh.promote("v2")
    assert _weights(kube_emulator) == {"v1": 0, "v2": 100}
    fresh.remove("v1")
    assert _subsets(kube_emulator) == ["v2"]
