"""The Kubernetes target's pure parts: RBAC, reading routes back, rollout and pod checks.

No network: the shipped ``mlshift/data/rbac.yaml`` equals ``rbac("default")``; live routes
read back into the same traffic they were rendered from, and compare equal to what was
rendered despite server defaults but not after another writer's change; Deployment status
and pod status give the right verdicts, judging only the newest rollout; events are matched
by exact name; the history annotation stays bounded; the target builds with no
cluster and names, in a dry run, the image it would push.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import mlshift
from mlshift._bundle import BundleInfo
from mlshift._exceptions import ConfigError
from mlshift._render import managed_routes
from mlshift._state import (
    EndpointState,
    HeaderRoute,
    Mirror,
    RoutePolicy,
    TrafficState,
    VersionSpec,
)
from mlshift.kube import Kubernetes, rbac
from mlshift.kube._live import (
    HISTORY_MAX_CHARS,
    current_rollout,
    deadline_exceeded,
    history_from_annotation,
    history_to_annotation,
    latest_warning,
    pod_problem,
    rollout_progress,
    routes_to_traffic,
    same_routes,
)

RBAC_FILE = Path(mlshift.__file__).parent / "data" / "rbac.yaml"


def test_shipped_rbac_manifest_is_the_generated_one() -> None:
    assert list(yaml.safe_load_all(RBAC_FILE.read_text(encoding="utf-8"))) == rbac("default")


def test_rbac_grants_exactly_the_verbs_used() -> None:
    role, binding = rbac("ml", name="models", service_account="jupyter")
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs[("apps", "deployments")] == {"get", "list", "create", "patch", "delete"}
    assert verbs[("apps", "replicasets")] == verbs[("", "events")] == {"list"}
    assert verbs[("networking.istio.io", "virtualservices")] == {
        "get",
        "list",
        "create",
        "patch",
        "delete",
    }
    assert verbs[("networking.istio.io", "destinationrules")] == {
        "get",
        "create",
        "patch",
        "delete",
    }
    assert not any("update" in v or "*" in v for v in verbs.values())
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jupyter", "namespace": "ml"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "models"


@pytest.mark.parametrize(
    ("traffic", "policy"),
    [
        (TrafficState({"v1": 100, "v2": 0}), RoutePolicy()),
        (
            TrafficState(
                {"v1": 70, "v2": 30},
                headers=(
                    HeaderRoute("v2", "x-canary", "yes"),
                    HeaderRoute("v1", "x-u", "^a", "regex"),
                ),
                mirror=Mirror("v2", 12.5),
            ),
            RoutePolicy(timeout_s=1.5, attempts=4, per_try_timeout_s=0.5, retry_on="5xx"),
        ),
        (TrafficState({"v2": 100}), RoutePolicy(timeout_s=None, attempts=0)),
    ],
)
def test_routes_read_back_to_the_same_traffic(traffic: TrafficState, policy: RoutePolicy) -> None:
    state = EndpointState(
        "churn", versions=(VersionSpec("v1"), VersionSpec("v2")), traffic=traffic, policy=policy
    )
    foreign = [{"name": "admin", "route": [{"destination": {"host": "x"}}]}]
    assert routes_to_traffic(foreign + managed_routes(state), ["v1", "v2"]) == (traffic, policy)


def test_routes_to_removed_versions_are_dropped() -> None:
    state = EndpointState(
        "churn",
        versions=(VersionSpec("v1"), VersionSpec("v2")),
        traffic=TrafficState({"v1": 50, "v2": 50}, mirror=Mirror("v2")),
    )
    traffic, _ = routes_to_traffic(managed_routes(state), ["v1"])
    assert traffic == TrafficState({"v1": 50})


def test_rollout_progress_follows_kubectl_rollout_status() -> None:
    done = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
        },
    }
    assert rollout_progress(done) == (True, 2, 2)
    stale = {**done, "status": {**done["status"], "observedGeneration": 1}}
    assert rollout_progress(stale)[0] is False
    old_pods = {**done, "status": {**done["status"], "replicas": 3}}
    assert rollout_progress(old_pods)[0] is False
    assert rollout_progress({"spec": {"replicas": 1}}) == (False, 0, 1)


def test_pod_problem_fatal_and_slow_reasons() -> None:
    crash = {
        "metadata": {"name": "p1"},
        "status": {
            "containerStatuses": [
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"exitCode": 1}},
                }
            ]
        },
    }
    assert pod_problem([crash]) == ("CrashLoopBackOff: back-off 40s (pod p1)", True)
    pending = {
        "metadata": {"name": "p2"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "no cpu",
                }
            ]
        },
    }
    assert pod_problem([pending]) == ("Unschedulable: no cpu (pod p2)", False)
    assert pod_problem([]) == ("", False)


def test_history_annotation_is_bounded_and_keeps_the_newest() -> None:
    many = tuple(TrafficState({f"version-{i}": 100}) for i in range(2000))
    text = history_to_annotation(many)
    assert len(text) <= HISTORY_MAX_CHARS
    back = history_from_annotation(text)
    assert back[-1] == many[-1] and 0 < len(back) < len(many)
    assert history_from_annotation("not json") == ()


def test_target_builds_with_no_cluster_and_names_the_dry_run_image(tmp_path: Path) -> None:
    target = Kubernetes(
        namespace="ml",
        registry="registry.example.com/ml/",
        progress=False,
        kubeconfig=str(tmp_path / "missing"),
        resources={"cpu_limit": "4"},
    )
    engine = target.engine("churn")
    assert (target.namespace(), engine.url(EndpointState("churn", "ml"))) == (
        "ml",
        "http://churn.ml.svc.cluster.local",
    )
    info = BundleInfo(path=tmp_path, sha256="ab" * 32, flavor="sklearn", serializer="skops")
    spec = target.prepare_version(info, "churn", "v2", dry_run=True)
    assert spec.image == "registry.example.com/ml/churn:churn-v2@sha256:<resolved-at-deploy>"
    assert (spec.model_sha256, spec.resources.cpu_limit) == ("ab" * 32, "4")
    assert repr(target) == "<Kubernetes namespace=ml registry=registry.example.com/ml>"


def test_missing_registry_and_bad_resources_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSHIFT_REGISTRY", raising=False)
    info = BundleInfo(path=tmp_path, sha256="cd" * 32, flavor="sklearn", serializer="skops")
    with pytest.raises(ConfigError, match="set registry= .* or MLSHIFT_REGISTRY"):
        Kubernetes(namespace="ml").prepare_version(info, "churn", "v1", dry_run=True)
    with pytest.raises(ConfigError, match="unknown resources key"):
        Kubernetes(resources={"gpu": "1"})


def test_environment_settings_and_url_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIFT_REGISTRY", "r.example.com/team")
    monkeypatch.setenv("MLSHIFT_URL", "http://{endpoint}.{namespace}.models.example.com")
    monkeypatch.setenv("MLSHIFT_ROLLOUT_TIMEOUT", "90s")
    target = Kubernetes(namespace="prod")
    assert target.repository("fraud") == "r.example.com/team/fraud"
    assert target.rollout_timeout == 90.0
    assert target.prometheus_url == "http://prometheus.istio-system:9090"
    url = target.engine("fraud").url(EndpointState("fraud", "prod"))
    assert url == "http://fraud.prod.models.example.com"


def test_exports() -> None:
    import mlshift.kube

    assert mlshift.kube.__all__ == sorted(mlshift.kube.__all__)
    assert mlshift.Kubernetes is Kubernetes and mlshift.rbac is rbac


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIFT_ROLLOUT_TIMEOUT", "90s")
    monkeypatch.setenv("MLSHIFT_PROMETHEUS_TOKEN", "from-env")
    target = Kubernetes(namespace="ml", rollout_timeout="5m", prometheus_token="given")
    assert (target.rollout_timeout, target.prometheus_token) == (300.0, "given")
    assert Kubernetes(namespace="ml").rollout_timeout == 90.0
    monkeypatch.delenv("MLSHIFT_ROLLOUT_TIMEOUT")
    target = Kubernetes(namespace="ml", prometheus_headers={"X-Scope-OrgID": "ml"})
    assert target.rollout_timeout == 300.0
    assert target.prometheus_headers == {"X-Scope-OrgID": "ml"}
    assert target.engine("churn").settings.prometheus_headers == {"X-Scope-OrgID": "ml"}


def _state() -> EndpointState:
    state = EndpointState("churn", "ml").with_version(VersionSpec("v1"))
    state = state.with_version(VersionSpec("v2"))
    traffic = TrafficState(
        {"v1": 75, "v2": 25},
        headers=(HeaderRoute("v2", "x-canary", "yes"),),
        mirror=Mirror("v2", 25.0),
    )
    return state.with_traffic(traffic)


def test_same_routes_ignores_server_defaults_and_foreign_routes() -> None:
    rendered = managed_routes(_state())
    live = [{"name": "admin", "route": []}, *(dict(r) for r in rendered)]
    live[-1] = {**live[-1], "mirrorPercentage": {"value": 25}, "corsPolicy": {"allowOrigins": []}}
    assert same_routes(live, rendered)


@pytest.mark.parametrize("change", ["weights", "header value", "new header", "mirror", "order"])
def test_same_routes_sees_another_writers_change(change: str) -> None:
    rendered = managed_routes(_state())
    live = [dict(r) for r in managed_routes(_state())]
    main, header = live[-1], live[0]
    if change == "weights":
        main["route"] = [{**d, "weight": 50} for d in main["route"]]
    elif change == "header value":
        header["match"] = [{"headers": {"x-canary": {"exact": "no"}}}]
    elif change == "new header":
        header["match"] = [{"headers": {"x-canary": {"exact": "yes"}, "x-user": {"exact": "a"}}}]
    elif change == "mirror":
        del main["mirror"]
    else:
        live.reverse()
    assert not same_routes(live, rendered)
    assert not same_routes(None, rendered)


def test_only_the_newest_rollout_is_judged() -> None:
    dep = {
        "metadata": {
            "name": "churn-v2",
            "generation": 2,
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "model", "image": "good"}]}}},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    assert deadline_exceeded(dep) == ""  # the condition is about generation 1

    def rs(hash_: str, revision: int) -> dict[str, object]:
        return {
            "metadata": {
                "name": f"churn-v2-{hash_}",
                "labels": {"pod-template-hash": hash_},
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                "ownerReferences": [{"kind": "Deployment", "name": "churn-v2"}],
            }
        }

    def pod(hash_: str, image: str) -> dict[str, object]:
        return {
            "metadata": {"name": f"churn-v2-{hash_}-x", "labels": {"pod-template-hash": hash_}},
            "spec": {"containers": [{"name": "model", "image": image}]},
        }

    pods = [pod("bbb", "broken"), pod("ggg", "good")]
    rollout = current_rollout(dep, [rs("bbb", 1), rs("ggg", 2)], pods)
    assert [p["metadata"]["name"] for p in rollout.pods] == ["churn-v2-ggg-x"]
    assert rollout.names("churn-v2") == {"churn-v2", "churn-v2-ggg", "churn-v2-ggg-x"}
    fallback = current_rollout(dep, [], pods)  # no ReplicaSets: the current image decides
    assert [p["metadata"]["name"] for p in fallback.pods] == ["churn-v2-ggg-x"]


def test_warning_events_match_exact_names_newest_first() -> None:
    def event(name: str, reason: str, when: str) -> dict[str, object]:
        return {"involvedObject": {"name": name}, "reason": reason, "lastTimestamp": when}

    events = [
        event("churn-v1-abc-x", "BackOff", "2024-01-01T00:00:02Z"),
        event("churn-v1-abc-x", "Failed", "2024-01-01T00:00:01Z"),
        event("churn-v10-abc-x", "Other", "2024-01-01T00:00:09Z"),
    ]
    assert latest_warning(events, {"churn-v1", "churn-v1-abc-x"}) == "BackOff:"
    assert latest_warning(events, {"churn-v1"}) == ""
