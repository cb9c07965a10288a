"""The renderer: an endpoint's desired state in, Kubernetes and Istio objects out. Pure.

One Deployment per version, one Service, one DestinationRule with a subset per version, and
one VirtualService whose managed HTTP routes carry the weights, header rules, mirror,
timeout and retries: first ``mlshift-version-<v>`` per version (the Open Inference
Protocol's version-pinned paths, ``/v2/models/{m}/versions/<v>/...``, always reach ``<v>``,
whatever the weights), then ``mlshift-header-N`` per header rule, then ``mlshift``, the
weighted split. The Kubernetes engine applies
these objects; the local engine translates the very same objects into Envoy configuration.
Routes someone else added to a VirtualService are kept by ``merge_routes``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlshift._state import EndpointState, HeaderRoute, RoutePolicy, TrafficState, VersionSpec

__all__ = [
    "MANAGED_BY",
    "MANAGED_ROUTE",
    "Manifests",
    "deployment_name",
    "is_managed_route",
    "managed_routes",
    "merge_routes",
    "render",
    "to_yaml",
    "version_path_regex",
]

MANAGED_ROUTE = "mlshift"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlshift"}
SERVICE_PORT = 80
CONTAINER_PORT = 8080
GRACE_PERIOD_S = 20
ISTIO_API = "networking.istio.io/v1"
# Envoy's default latency buckets start at 0.5 ms and jump to 5 ms; a fast model needs finer.
LATENCY_BUCKETS_MS = [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 10000]


def deployment_name(endpoint: str, version: str) -> str:
    """Return the Deployment name of a version (``<endpoint>-<version>``).

    Example:
        >>> deployment_name("churn", "v2")
        'churn-v2'
    """
    return f"{endpoint}-{version}"


def is_managed_route(route: Mapping[str, Any]) -> bool:
    """Tell whether an HTTP route of a VirtualService is one mlshift owns.

    Example:
        >>> is_managed_route({"name": "mlshift-version-v2"}), is_managed_route({"name": "admin"})
        (True, False)
    """
    name = str(route.get("name") or "")
    return name == MANAGED_ROUTE or name.startswith(
        (MANAGED_ROUTE + "-header-", MANAGED_ROUTE + "-version-")
    )


def version_path_regex(version: str) -> str:
    """The (RE2, full-match) path regex of requests pinned to ``version`` by the protocol.

    Example:
        >>> version_path_regex("v2")
        '/v2/models/[^/]+/versions/v2(/.*)?'
    """
    return f"/v2/models/[^/]+/versions/{version}(/.*)?"


@dataclass(frozen=True)
class Manifests:
    """The objects of one endpoint, ready to apply or to review."""

    deployments: dict[str, dict[str, Any]]
    service: dict[str, Any]
    destination_rule: dict[str, Any]
    virtual_service: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        """Every object in apply order: Deployments, Service, DestinationRule, VirtualService."""
        return [
            *self.deployments.values(),
            self.service,
            self.destination_rule,
            self.virtual_service,
        ]

    def to_yaml(self) -> str:
        """Return the objects as one multi-document YAML string."""
        return to_yaml(self.all())


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Return ``objects`` as multi-document YAML, keys in the order written."""
    import yaml

    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)


def _duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _meta(
    state: EndpointState, name: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    labels = {"app": state.name, **MANAGED_BY, **(extra or {})}
    return {"name": name, "namespace": state.namespace, "labels": labels}


def render_deployment(state: EndpointState, spec: VersionSpec) -> dict[str, Any]:
    """Return the Deployment of one version (image by digest, probes, restricted pod)."""
    labels = {"app": state.name, "version": spec.name}
    image = spec.image or f"mlshift.local/{state.name}:{spec.name}"
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2}
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "PORT", "value": str(CONTAINER_PORT)},
            {"name": "MLSHIFT_MODEL_NAME", "value": state.name},
            {"name": "MLSHIFT_MODEL_VERSION", "value": spec.name},
            {"name": "MLSHIFT_GRACE_PERIOD_S", "value": str(GRACE_PERIOD_S)},
            # auto reads the CPU limit from the cgroup quota and caps it for the memory limit.
            {"name": "WORKERS", "value": "auto"},
        ],
        "readinessProbe": {**probe, "failureThreshold": 1},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "resources": {
            "requests": {
                "cpu": spec.resources.cpu_request,
                "memory": spec.resources.memory_request,
            },
            "limits": {"cpu": spec.resources.cpu_limit, "memory": spec.resources.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(CONTAINER_PORT),
        "prometheus.io/path": "/metrics",
        "sidecar.istio.io/statsHistogramBuckets": json.dumps({"istiocustom": LATENCY_BUCKETS_MS}),
        "mlshift.io/model-sha256": spec.model_sha256,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(state, deployment_name(state.name, spec.name), {"version": spec.name}),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, **MANAGED_BY}, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": GRACE_PERIOD_S + 5,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def render_service(state: EndpointState) -> dict[str, Any]:
    """Return the endpoint's Service: port 80 ``http`` to container port 8080."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(state, state.name),
        "spec": {
            "selector": {"app": state.name},
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": CONTAINER_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_destination_rule(
    state: EndpointState, versions: Iterable[str] | None = None
) -> dict[str, Any]:
    """Return the DestinationRule with one subset per version (or per name in ``versions``)."""
    names = list(versions) if versions is not None else state.version_names
    return {
        "apiVersion": ISTIO_API,
        "kind": "DestinationRule",
        "metadata": _meta(state, state.name),
        "spec": {
            "host": state.name,
            "subsets": [{"name": v, "labels": {"version": v}} for v in names],
        },
    }


def _destination(state: EndpointState, version: str) -> dict[str, Any]:
    return {"host": state.name, "subset": version, "port": {"number": SERVICE_PORT}}


def _policy(route: dict[str, Any], policy: RoutePolicy) -> None:
    if policy.timeout_s:
        route["timeout"] = _duration(policy.timeout_s)
    retries: dict[str, Any] = {"attempts": policy.attempts, "retryOn": policy.retry_on}
    if policy.per_try_timeout_s:
        retries["perTryTimeout"] = _duration(policy.per_try_timeout_s)
    route["retries"] = retries


def _header_route(state: EndpointState, index: int, rule: HeaderRoute) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": f"{MANAGED_ROUTE}-header-{index}",
        "match": [{"headers": {rule.header.lower(): {rule.match: rule.value}}}],
        "route": [{"destination": _destination(state, rule.version), "weight": 100}],
    }
    _policy(route, state.policy)
    return route


def _version_route(state: EndpointState, version: str) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": f"{MANAGED_ROUTE}-version-{version}",
        "match": [{"uri": {"regex": version_path_regex(version)}}],
        "route": [{"destination": _destination(state, version), "weight": 100}],
    }
    _policy(route, state.policy)
    return route


def managed_routes(
    state: EndpointState, traffic: TrafficState | None = None
) -> list[dict[str, Any]]:
    """Return mlshift's HTTP routes, first match wins: version-pinned paths, header rules,
    then the weighted split."""
    t = traffic or state.traffic
    routes = [_version_route(state, v) for v in state.version_names]
    routes += [_header_route(state, i, rule) for i, rule in enumerate(t.headers)]
    main: dict[str, Any] = {
        "name": MANAGED_ROUTE,
        "route": [
            {"destination": _destination(state, v), "weight": int(t.weights.get(v, 0))}
            for v in state.version_names
            if v in t.weights
        ],
    }
    if t.mirror:
        main["mirror"] = _destination(state, t.mirror.version)
        main["mirrorPercentage"] = {"value": float(t.mirror.percent)}
    _policy(main, state.policy)
    routes.append(main)
    return routes


def merge_routes(
    existing: Iterable[Mapping[str, Any]] | None, managed: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Replace mlshift's routes in ``existing`` with ``managed``, keeping every other route.

    mlshift's routes go where the first of them stood (at the end when there were none), so a
    foreign route placed before them keeps matching first.

    Example:
        >>> merge_routes([{"name": "admin"}, {"name": "mlshift"}], [{"name": "mlshift", "x": 1}])
        [{'name': 'admin'}, {'name': 'mlshift', 'x': 1}]
    """
    old = [copy.deepcopy(dict(r)) for r in existing or ()]
    positions = [i for i, r in enumerate(old) if is_managed_route(r)]
    at = positions[0] if positions else len(old)
    foreign = [r for r in old if not is_managed_route(r)]
    before = sum(1 for i, r in enumerate(old) if i < at and not is_managed_route(r))
    return [*foreign[:before], *(dict(m) for m in managed), *foreign[before:]]


def render_virtual_service(
    state: EndpointState, traffic: TrafficState | None = None
) -> dict[str, Any]:
    """Return the VirtualService with only mlshift's managed routes."""
    spec: dict[str, Any] = {
        "hosts": [state.name, *(h for h in state.hosts if h != state.name)],
        "http": managed_routes(state, traffic),
    }
    if state.gateways:
        spec["gateways"] = list(state.gateways)
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": _meta(state, state.name),
        "spec": spec,
    }


def render(state: EndpointState) -> Manifests:
    """Render every object of an endpoint.

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> s = EndpointState("churn").with_version(VersionSpec("v1"))
        >>> render(s).virtual_service["spec"]["http"][-1]["route"][0]["weight"]
        100
    """
    return Manifests(
        deployments={v.name: render_deployment(state, v) for v in state.versions},
        service=render_service(state),
        destination_rule=render_destination_rule(state),
        virtual_service=render_virtual_service(state),
    )
