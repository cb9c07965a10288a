"""Traffic that would silently ignore the weights, found from the objects alone.

Pods are labelled for sidecar injection; naming gateways always keeps ``mesh`` (else the
sidecars of in-cluster callers ignore the routes); a pod without its ``istio-proxy`` (a
sidecar container or a native-sidecar init container) gives a warning that names the pod
and the fix, an ambient pod a warning about waypoints; terminating pods do not count.
"""

from __future__ import annotations

from typing import Any

from mlshift._render import render, vs_gateways
from mlshift._state import EndpointState, PodOptions, VersionSpec
from mlshift.kube._live import version_from_deployment
from mlshift.kube._mesh import host_conflicts, mesh_warning


def _pod(name: str, *containers: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **meta},
        "spec": {"containers": [{"name": c} for c in containers]},
    }


def test_pods_are_labelled_for_injection_unless_ambient() -> None:
    state = EndpointState("churn", "ml").with_version(VersionSpec("v1"))
    dep = render(state).deployments["v1"]
    assert dep["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert version_from_deployment(dep).pod.sidecar is True
    ambient = VersionSpec("v1", pod=PodOptions(sidecar=False))
    dep = render(EndpointState("churn", "ml").with_version(ambient)).deployments["v1"]
    assert "sidecar.istio.io/inject" not in dep["spec"]["template"]["metadata"]["labels"]
    assert version_from_deployment(dep).pod.sidecar is False


def test_gateways_always_keep_the_mesh() -> None:
    state = EndpointState("churn", "ml", gateways=("istio-system/public",)).with_version(
        VersionSpec("v1")
    )
    assert render(state).virtual_service["spec"]["gateways"] == ["istio-system/public", "mesh"]
    assert vs_gateways(["mesh", "gw"]) == ["mesh", "gw"]
    assert vs_gateways([]) == []
    plain = EndpointState("churn", "ml").with_version(VersionSpec("v1"))
    assert "gateways" not in render(plain).virtual_service["spec"]  # Istio's default: mesh


def test_pods_without_proxy_are_named_with_the_fix() -> None:
    assert mesh_warning([_pod("a", "model", "istio-proxy")], "ml") == ""
    native = {"metadata": {"name": "n"}, "spec": {"containers": [{"name": "model"}],
              "initContainers": [{"name": "istio-proxy"}]}}  # fmt: skip
    assert mesh_warning([native], "ml") == ""
    text = mesh_warning([_pod("a", "model", "istio-proxy"), _pod("b", "model")], "ml")
    assert text.startswith("pod b runs without the istio-proxy sidecar")
    assert "ignoring the weights" in text
    assert "kubectl label namespace ml istio-injection=enabled" in text
    many = mesh_warning([_pod("b", "model"), _pod("c", "model")], "ml")
    assert "pod b (and 1 more)" in many
    leaving = _pod("d", "model", deletionTimestamp="2026-01-01T00:00:00Z")
    assert mesh_warning([leaving], "ml") == ""


def test_ambient_pods_get_the_waypoint_warning() -> None:
    pod = _pod("a", "model", annotations={"ambient.istio.io/redirection": "enabled"})
    text = mesh_warning([pod], "ml")
    assert "ambient" in text
    assert "istio.io/use-waypoint" in text


def _vs(name: str, created: str, *hosts: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"hosts": list(hosts)},
    }


def test_an_older_virtual_service_on_the_host_is_named() -> None:
    ours = _vs("churn", "2026-02-01T00:00:00Z", "churn", "churn.example.com")
    older = _vs("legacy", "2025-06-01T00:00:00Z", "churn.ml.svc.cluster.local")
    newer = _vs("late", "2026-03-01T00:00:00Z", "churn.example.com")
    elsewhere = _vs("other", "2025-01-01T00:00:00Z", "churn.prod.svc.cluster.local", "fraud")
    args = {"name": "churn", "namespace": "ml", "hosts": ["churn", "churn.example.com"]}
    text = host_conflicts([ours, older, newer, elsewhere], **args)  # type: ignore[arg-type]
    first, second = text.split("; ")
    assert first.startswith("VirtualService ml/legacy also claims host churn and is older")
    assert "mlshift's weights do nothing" in first
    assert second.startswith("VirtualService ml/late also claims host churn.example.com:")
    assert "ignores its routes" in second
    assert host_conflicts([ours, elsewhere], **args) == ""  # type: ignore[arg-type]
    # Before mlshift's exists, any other claimant is the older one.
    assert "is older" in host_conflicts([newer], **args)  # type: ignore[arg-type]
