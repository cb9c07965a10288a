"""Choosing the routing: the targets' ``routing=``, dry runs and render() with no cluster, the
repr, the Role per routing, and the metrics reporter for ambient mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlshift import Endpoint
from mlshift._exceptions import InvalidArgumentError
from mlshift.kube import Kubernetes, rbac
from mlshift.local import Local
from mlshift.metrics._prometheus import istio_queries
from tests.fixtures.gateway_api import validate_http_route


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "MLSHIFT_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "sa"


def test_gateway_api_dry_runs_and_render_need_no_cluster(no_cluster: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], [0, 1, 0, 1]
    target = Kubernetes(
        registry="registry.example.com/ml", service_account_dir=no_cluster, routing="gateway-api"
    )
    ep = Endpoint("churn", target)
    first = ep.deploy(LogisticRegression().fit(X, y), "v1", dry_run=True)
    assert [s.describe() for s in first.steps][2:] == [
        "apply Service churn-v1",
        "apply Service churn",
        "patch-routes HTTPRoute churn (weights v1=100)",
    ]
    ep.deploy(LogisticRegression(C=0.5).fit(X, y), "v2", dry_run=True)
    plan = ep.shift({"v1": 90, "v2": 10}, dry_run=True)
    assert str(plan).endswith("patch-routes HTTPRoute churn (weights v1=90, v2=10)")
    assert "via gateway-api" in repr(ep)
    docs = [d for d in yaml.safe_load_all(ep.render()) if d]
    assert [d["kind"] for d in docs] == [
        "Deployment",
        "Deployment",
        "Service",
        "Service",
        "Service",
        "HTTPRoute",
    ]
    assert validate_http_route(docs[-1]) == []


def test_auto_without_a_cluster_is_istio(no_cluster: Path) -> None:
    target = Kubernetes(service_account_dir=no_cluster)
    found = target.detect_routing("churn")
    assert (found.routing, found.ambient) == ("istio", False)
    assert "no cluster" in found.reason
    assert "routing" not in repr(target)
    assert "routing=gateway-api" in repr(Kubernetes(routing="gateway-api"))


def test_unknown_routing_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="routing must be"):
        Kubernetes(routing="linkerd")
    with pytest.raises(InvalidArgumentError, match="routing must be"):
        Local(routing="auto")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="routing must be"):
        rbac("ml", routing="linkerd")


def _granted(routing: str) -> set[tuple[str, str, str]]:
    role = rbac("ml", routing=routing)[0]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_what_the_routing_needs() -> None:
    istio, gateway, auto = _granted("istio"), _granted("gateway-api"), _granted("auto")
    assert not any(r == "httproutes" for _, r, _ in istio)
    assert not any(g == "networking.istio.io" for g, _, _ in gateway)
    assert ("gateway.networking.k8s.io", "httproutes", "patch") in gateway
    assert ("", "services", "list") in gateway
    assert istio | gateway <= auto
    assert ("", "services", "get") in istio & gateway  # is it mlshift's Service to update?
    assert auto - (istio | gateway) == {("gateway.networking.k8s.io", "httproutes", "list")}


def test_ambient_metrics_come_from_the_waypoint_and_the_version_services() -> None:
    sidecar = istio_queries("churn", "ml", 60.0)["rps"]
    assert 'reporter="destination",destination_service_name="churn",' in sidecar
    ambient = istio_queries("churn", "ml", 60.0, reporter="waypoint", version_services=True)
    assert 'reporter="waypoint",destination_service_name=~"churn|churn-.+",' in ambient["rps"]
    with pytest.raises(InvalidArgumentError, match="reporter"):
        istio_queries("churn", "ml", 60.0, reporter="source")
