"""The Kubernetes target's pure parts: RBAC, reading routes back, rollout and pod checks.

No network: the shipped ``mlshift/data/rbac.yaml`` equals ``rbac("default")``; live routes
read back into the same traffic they were rendered from; Deployment status and pod status
give the right verdicts; the history annotation stays bounded; the target builds with no
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
    history_from_annotation,
    history_to_annotation,
    pod_problem,
    rollout_progress,
    routes_to_traffic,
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
    assert verbs[("apps", "deployments")] == {"get", "list", "watch", "create", "patch", "delete"}
    assert verbs[("", "events")] == {"get", "list"}
    assert verbs[("networking.istio.io", "virtualservices")] == {
        "get",
        "list",
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
    assert spec.image == "registry.example.com/ml/churn:churn-v2"
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
