"""Every object the renderer produces is one a real cluster accepts.

The DestinationRule and VirtualService of several states (one version; a canary with header
routes, a mirror and a retry policy; extra hosts and gateways; a removal half-way) are
validated against Istio's own CRD ``openAPIV3Schema`` with jsonschema, made stricter than
the API server's pruning (unknown fields are errors, since the server would silently drop
them) and with the CRD's CEL rules on the fields mlshift writes evaluated here. The
Deployment, Service, Role and RoleBinding pass ``kubernetes-validate --strict`` at the
newest Kubernetes it knows, and the pod template meets the "restricted" Pod Security
Standard.

The CRD file is the copy in ``tests/data/istio`` (Istio's public schema, unchanged); when
the shared original ``../shared/istio`` sits beside the repository, the copy must equal it.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlshift._plan import plan_change
from mlshift._render import render, render_destination_rule
from mlshift._state import (
    EndpointState,
    HeaderRoute,
    Mirror,
    PodOptions,
    Resources,
    RoutePolicy,
    TrafficState,
    VersionSpec,
)
from mlshift.kube import rbac

REPO = Path(__file__).resolve().parents[2]
COPY = REPO / "tests" / "data" / "istio" / "networking-crds-v1.yaml"
SHARED = REPO.parent / "shared" / "istio" / "networking-crds-v1.yaml"
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _crd_path() -> Path:
    for path in (COPY, SHARED):
        if path.is_file():
            return path
    pytest.fail(f"Istio's CRDs are missing: neither {COPY} nor {SHARED} exists")


def test_crd_copy_matches_the_shared_original() -> None:
    assert COPY.is_file(), f"{COPY} is missing; copy it from {SHARED}"
    if SHARED.is_file():
        assert COPY.read_bytes() == SHARED.read_bytes(), "tests/data copy drifted from shared/"


def _go_duration_s(text: str) -> float:
    return sum(
        float(n) * _UNIT_S[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    )


def _cel(validator: Any, rules: list[dict[str, Any]], instance: Any, schema: Any) -> Any:
    """Evaluate the CEL rules mlshift's fields meet; any other rule reached is an error."""
    for rule in rules:
        text = rule.get("rule", "")
        if text == "duration(self) >= duration('1ms')":
            if not isinstance(instance, str) or not GO_DURATION.match(instance):
                yield jsonschema.ValidationError(f"{instance!r} is not a Go duration")
            elif _go_duration_s(instance) < 1e-3:
                yield jsonschema.ValidationError(f"{instance!r} is shorter than 1ms")
        else:
            yield jsonschema.ValidationError(f"unhandled CEL rule {text!r} on {instance!r}")


def _strict(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: nullable, closed objects."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k not in ("nullable",)}
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and not preserve:
        out.setdefault("additionalProperties", False)
    return out


@cache
def _validators() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(_crd_path().read_text(encoding="utf-8")) if d]
    cel = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"x-kubernetes-validations": _cel}
    )
    out = {}
    for doc in docs:
        version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
        schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        schema["properties"].update(
            apiVersion={"const": "networking.istio.io/v1"},
            kind={"const": doc["spec"]["names"]["kind"]},
            metadata={"type": "object"},
        )
        schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
        cel.check_schema(schema)
        out[doc["spec"]["names"]["kind"]] = cel(schema)
    return out


def _istio_errors(obj: dict[str, Any]) -> list[str]:
    validator = _validators()[obj["kind"]]
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def _sha(n: int) -> str:
    return f"{n:064x}"


def _states() -> dict[str, EndpointState]:
    one = EndpointState("churn", namespace="ml").with_version(
        VersionSpec("v1", _sha(1), image=f"registry.example.com/ml/churn@sha256:{_sha(1)}")
    )
    canary = one.with_version(
        VersionSpec(
            "v2",
            _sha(2),
            image=f"registry.example.com/ml/churn@sha256:{_sha(2)}",
            replicas=3,
            resources=Resources("500m", "4", "1Gi", "2Gi"),
        )
    ).with_version(VersionSpec("v3", _sha(3), image="registry.example.com/ml/churn:churn-v3"))
    canary = canary.with_traffic(
        TrafficState(
            {"v1": 85, "v2": 15, "v3": 0},
            headers=(
                HeaderRoute("v2", "x-canary", "yes"),
                HeaderRoute("v3", "x-user", "qa-", "prefix"),
                HeaderRoute("v3", "x-tenant", "^(acme|initech)$", "regex"),
            ),
            mirror=Mirror("v3", 12.5),
        )
    )
    canary = EndpointState(
        canary.name,
        canary.namespace,
        canary.versions,
        canary.traffic,
        RoutePolicy(timeout_s=2.5, attempts=3, per_try_timeout_s=0.25, retry_on="5xx,reset"),
    )
    gateways = EndpointState(
        "fraud",
        namespace="prod",
        hosts=("fraud.models.example.com",),
        gateways=("istio-system/public-gateway", "mesh"),
        policy=RoutePolicy(timeout_s=None, attempts=0),
    ).with_version(VersionSpec("v7", _sha(7), image=f"r.example.com/fraud@sha256:{_sha(7)}"))
    platform = one.with_version(
        VersionSpec(
            "v4",
            _sha(4),
            image=f"registry.example.com/ml/churn@sha256:{_sha(4)}",
            replicas=2,
            autoscale=(2, 6, 70),
            resources=Resources("2", "4", "8Gi", "16Gi", gpus=1),
            pod=PodOptions(
                startup_s=900,
                drain_s=10,
                service_account="churn-model",
                image_pull_secrets=("regcred", "mirror-cred"),
                node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                tolerations=(
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                ),
            ),
        )
    ).with_version(VersionSpec("v5", _sha(5), image=f"r.io/c@sha256:{_sha(5)}", replicas=3))
    return {"one-version": one, "canary": canary, "gateways": gateways, "platform": platform}


STATES = _states()


@pytest.mark.parametrize("name", sorted(STATES))
def test_istio_objects_validate_against_istio_crds(name: str) -> None:
    manifests = render(STATES[name])
    for obj in (manifests.destination_rule, manifests.virtual_service):
        assert _istio_errors(obj) == [], f"{obj['kind']} of {name}"


def test_plan_objects_validate_too() -> None:
    """The union DestinationRule and the routes patch of a plan are as valid as render()."""
    old = STATES["canary"]
    plan = plan_change(old, old.without_version("v3").with_traffic(TrafficState({"v1": 100})))
    union = render_destination_rule(old, ["v1", "v2", "v3"])
    assert _istio_errors(union) == []
    for step in plan.steps:
        if step.action == "patch-routes":
            vs = render(plan.state).virtual_service
            vs["spec"]["http"] = step.obj["http"] if step.obj else []
            assert _istio_errors(vs) == []


def test_the_schema_check_catches_mistakes() -> None:
    vs = render(STATES["canary"]).virtual_service
    bad_field = copy.deepcopy(vs)
    bad_field["spec"]["http"][0]["wieght"] = 3
    bad_timeout = copy.deepcopy(vs)
    bad_timeout["spec"]["http"][-1]["timeout"] = "30 seconds"
    too_short = copy.deepcopy(vs)
    too_short["spec"]["http"][-1]["retries"]["perTryTimeout"] = "0.0001s"
    bad_type = copy.deepcopy(vs)
    bad_type["spec"]["http"][-1]["route"][0]["weight"] = "ten"
    for broken in (bad_field, bad_timeout, too_short, bad_type):
        assert _istio_errors(broken), broken["spec"]["http"]


def _k8s_validate(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", sorted(STATES))
def test_core_objects_pass_kubernetes_validate_strict(name: str) -> None:
    manifests = render(STATES[name])
    companions = [o for objs in manifests.companions.values() for o in objs]
    for obj in [*manifests.deployments.values(), *companions, manifests.service]:
        _k8s_validate(obj)


def test_platform_options_render_what_a_cluster_runs() -> None:
    """GPU, placement, pull secrets, a service account; a budget and an autoscaler."""
    manifests = render(STATES["platform"])
    pod = manifests.deployments["v4"]["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["serviceAccountName"] == "churn-model"
    assert "automountServiceAccountToken" not in pod  # the account's token is wanted
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-cred"}]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "replicas" not in manifests.deployments["v4"]["spec"]  # the autoscaler's to set
    kinds = {v: [o["kind"] for o in objs] for v, objs in manifests.companions.items()}
    assert kinds == {
        "v1": [],
        "v4": ["PodDisruptionBudget", "HorizontalPodAutoscaler"],
        "v5": ["PodDisruptionBudget"],
    }
    hpa = manifests.companions["v4"][1]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"]["name"] == "churn-v4"
    assert manifests.deployments["v5"]["spec"]["replicas"] == 3
    docs = list(yaml.safe_load_all(manifests.to_yaml()))
    assert [d["kind"] for d in docs][:4] == [
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]


@pytest.mark.parametrize("extra", [{}, {"replicas": True, "autoscale": True, "pod_monitor": True}])
def test_rbac_objects_pass_kubernetes_validate_strict(extra: dict[str, bool]) -> None:
    for obj in rbac("ml", **extra):
        _k8s_validate(obj)


def test_kubernetes_validate_strict_catches_mistakes() -> None:
    import kubernetes_validate

    dep = copy.deepcopy(render(STATES["one-version"]).deployments["v1"])
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        _k8s_validate(dep)


SAFE_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The "restricted" Pod Security Standard (Kubernetes 1.25+), field by field."""
    spec, problems = pod["spec"], []
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} must be false")
    for volume in spec.get("volumes") or ():
        kinds = set(volume) - {"name"}
        if not kinds <= SAFE_VOLUMES:
            problems.append(f"volume {volume['name']} uses {kinds - SAFE_VOLUMES}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser must not be 0")
    if pod_sc.get("sysctls"):
        problems.append("no sysctls")
    containers = [*(spec.get("initContainers") or ()), *spec["containers"]]
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: only NET_BIND_SERVICE may be added")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports") or ()):
            problems.append(f"{name}: no hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount must be Default")
    return problems


@pytest.mark.parametrize("name", sorted(STATES))
def test_deployment_meets_the_restricted_pod_security_standard(name: str) -> None:
    for dep in render(STATES[name]).deployments.values():
        pod = dep["spec"]["template"]
        assert restricted_violations(pod) == []
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be writable"


def test_restricted_check_catches_a_root_pod() -> None:
    pod = copy.deepcopy(render(STATES["one-version"]).deployments["v1"]["spec"]["template"])
    pod["spec"]["securityContext"] = {}
    container = pod["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    pod["spec"]["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}})
    assert len(restricted_violations(pod)) >= 6
