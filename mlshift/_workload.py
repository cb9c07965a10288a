"""The objects of one version's pods: its Deployment and what goes with it. Pure.

A version is a Deployment ``<endpoint>-<version>`` (image by digest, probes, a pod that
passes the "restricted" Pod Security profile) and, when it outgrows one pod, a
PodDisruptionBudget (at most one pod evicted at a time, so a node drain never takes the
whole version down) and, with ``autoscale``, a HorizontalPodAutoscaler that owns its
replica count; with ``pod_monitor``, a Prometheus Operator PodMonitor. ``mlshift._render``
puts these next to the endpoint's routing objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from mlshift._state import EndpointState, VersionSpec

__all__ = [
    "AUTOSCALE_ANNOTATION",
    "CONTAINER_PORT",
    "GPU_RESOURCE",
    "INJECT_LABEL",
    "MANAGED_BY",
    "PLACEHOLDER_DIGEST",
    "POD_MONITOR_ANNOTATION",
    "companions",
    "deployment_name",
    "object_meta",
    "render_autoscaler",
    "render_deployment",
    "render_disruption_budget",
    "render_pod_monitor",
]

MANAGED_BY = {"app.kubernetes.io/managed-by": "mlshift"}
CONTAINER_PORT = 8080
GRACE_PERIOD_S = 20
STARTUP_PERIOD_S = 5
GPU_RESOURCE = "nvidia.com/gpu"
AUTOSCALE_ANNOTATION = "mlshift.io/autoscale"
INJECT_LABEL = "sidecar.istio.io/inject"
POD_MONITOR_ANNOTATION = "mlshift.io/pod-monitor"
PLACEHOLDER_DIGEST = "sha256:<resolved-at-deploy>"
"""The digest of an image a dry run names but has not built: ``<repo>:<tag>@`` this."""
PLACEHOLDER_ANNOTATION = "mlshift.io/image-placeholder"
# Envoy's default latency buckets start at 0.5 ms and jump to 5 ms; a fast model needs finer.
LATENCY_BUCKETS_MS = [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 10000]


def deployment_name(endpoint: str, version: str) -> str:
    """Return the Deployment name of a version (``<endpoint>-<version>``).

    Example:
        >>> deployment_name("churn", "v2")
        'churn-v2'
    """
    return f"{endpoint}-{version}"


def object_meta(
    state: EndpointState, name: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The metadata of an object mlshift writes: name, namespace, its labels."""
    labels = {"app": state.name, **MANAGED_BY, **(extra or {})}
    return {"name": name, "namespace": state.namespace, "labels": labels}


def _probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _resources(spec: VersionSpec) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, str] = {"cpu": res.cpu_request, "memory": res.memory_request}
    limits: dict[str, str] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if res.gpus:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(res.gpus)
    return {"requests": requests, "limits": limits}


def _pod_spec(spec: VersionSpec, container: dict[str, Any], drain_s: int) -> dict[str, Any]:
    pod = spec.pod
    out: dict[str, Any] = {"terminationGracePeriodSeconds": drain_s + GRACE_PERIOD_S + 5}
    if pod.service_account:
        out["serviceAccountName"] = pod.service_account
    else:
        out["automountServiceAccountToken"] = False  # the model needs no API access
    if pod.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": s} for s in pod.image_pull_secrets]
    if pod.node_selector:
        out["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        out["tolerations"] = [dict(t) for t in pod.tolerations]
    out["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    out["containers"] = [container]
    out["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    return out


def render_deployment(state: EndpointState, spec: VersionSpec) -> dict[str, Any]:
    """Return the Deployment of one version (image by digest, probes, restricted pod).

    Probes: readiness every 5 s with a 3 s timeout and 3 failures before the pod leaves the
    endpoints (one slow answer under load must not drop it); liveness likewise, every 10 s;
    a startup probe gives the model ``spec.pod.startup_s`` to load. On stop, a ``preStop``
    wait of ``spec.pod.drain_s`` keeps the pod serving while endpoints and sidecars learn it
    is going away; then the server drains (``MLSHIFT_GRACE_PERIOD_S``). With ``autoscale``
    the Deployment leaves ``replicas`` out: the HorizontalPodAutoscaler owns it, and applying
    the Deployment again must not reset it.

    Example:
        >>> from mlshift._state import VersionSpec
        >>> s = EndpointState("churn").with_version(VersionSpec("v1", replicas=3))
        >>> render_deployment(s, s.versions[0])["spec"]["replicas"]
        3
    """
    labels = {"app": state.name, "version": spec.name}
    image = spec.image or f"mlshift.local/{state.name}:{spec.name}"
    drain_s = max(0, math.ceil(spec.pod.drain_s))
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
            *([{"name": "MLSHIFT_TRUST_PICKLE", "value": "1"}] if spec.trust_pickle else []),
            # auto reads the CPU limit from the cgroup quota and caps it for the memory limit.
            {"name": "WORKERS", "value": "auto"},
        ],
        "readinessProbe": _probe("/v2/health/ready", period=5, timeout=3, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, timeout=5, failures=3),
        "startupProbe": _probe(
            "/v2/health/live",
            period=STARTUP_PERIOD_S,
            timeout=3,
            failures=max(1, math.ceil(spec.pod.startup_s / STARTUP_PERIOD_S)),
        ),
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if drain_s:
        # An exec of the image's own Python, not the kubelet's ``sleep`` action: that one
        # needs Kubernetes 1.30, and a base image need not have /bin/sleep.
        sleep = f"import time; time.sleep({drain_s})"
        container["lifecycle"] = {"preStop": {"exec": {"command": ["python", "-c", sleep]}}}
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(CONTAINER_PORT),
        "prometheus.io/path": "/metrics",
        "sidecar.istio.io/statsHistogramBuckets": json.dumps({"istiocustom": LATENCY_BUCKETS_MS}),
        "mlshift.io/model-sha256": spec.model_sha256,
    }
    meta = object_meta(state, deployment_name(state.name, spec.name), {"version": spec.name})
    notes: dict[str, str] = {}
    if image.endswith("@" + PLACEHOLDER_DIGEST):
        # A dry run built nothing, so there is no digest to pin yet; the reference is made
        # one no kubelet pulls (InvalidImageName), so applying it as is fails loudly
        # instead of running whatever a mutable tag points at.
        notes[PLACEHOLDER_ANNOTATION] = (
            f"dry run: {image.split('@')[0]} is not built yet; deploy() pushes it and pins"
            " the image to its digest"
        )
    if spec.pod.pod_monitor:
        notes[POD_MONITOR_ANNOTATION] = _interval(spec.pod.scrape_interval_s)
    deployment_spec: dict[str, Any] = {}
    if spec.autoscale:
        notes[AUTOSCALE_ANNOTATION] = ",".join(map(str, spec.autoscale))
    else:
        deployment_spec["replicas"] = spec.replicas
    if notes:
        meta["annotations"] = notes
    deployment_spec["selector"] = {"matchLabels": labels}
    pod_labels = {**labels, **MANAGED_BY}
    if spec.pod.sidecar:
        # Istio's injector also honours this pod label where the namespace is not labelled
        # (its object selector); only a proxy beside the pod reports its requests.
        pod_labels[INJECT_LABEL] = "true"
    deployment_spec["template"] = {
        "metadata": {"labels": pod_labels, "annotations": annotations},
        "spec": _pod_spec(spec, container, drain_s),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": deployment_spec,
    }


def render_disruption_budget(state: EndpointState, spec: VersionSpec) -> dict[str, Any]:
    """Return the version's PodDisruptionBudget: at most one pod evicted at a time.

    ``maxUnavailable: 1`` (not a ``minAvailable``) never blocks a node drain outright, even
    while an autoscaler holds a single pod.
    """
    name = deployment_name(state.name, spec.name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(state, name, {"version": spec.name}),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app": state.name, "version": spec.name}},
        },
    }


def render_autoscaler(state: EndpointState, spec: VersionSpec) -> dict[str, Any]:
    """Return the version's HorizontalPodAutoscaler (``spec.autoscale`` must be set).

    It scales the Deployment between ``min`` and ``max`` pods to hold the average CPU use
    at ``target`` % of the CPU request.
    """
    assert spec.autoscale is not None, f"version {spec.name} does not autoscale"
    low, high, cpu = spec.autoscale
    name = deployment_name(state.name, spec.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(state, name, {"version": spec.name}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu},
                    },
                }
            ],
        },
    }


def _interval(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def render_pod_monitor(state: EndpointState, spec: VersionSpec) -> dict[str, Any]:
    """Return the version's Prometheus Operator ``PodMonitor``.

    The Operator ignores ``prometheus.io/*`` annotations. With a sidecar, Istio rewrites
    them to its agent's merged endpoint (port 15020, ``/stats/prometheus``: Istio's request
    metrics and the model server's own), so the monitor selects the sidecar's named port
    and moves the address to the annotated port, as Istio's own example does.
    """
    name = deployment_name(state.name, spec.name)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": object_meta(state, name, {"version": spec.name}),
        "spec": {
            "selector": {"matchLabels": {"app": state.name, "version": spec.name}},
            "podMetricsEndpoints": [
                {
                    "port": "http-envoy-prom",
                    "path": "/stats/prometheus",
                    "interval": _interval(spec.pod.scrape_interval_s),
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": [
                                "__address__",
                                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                            ],
                            "regex": r"([^:]+)(?::\d+)?;(\d+)",
                            "replacement": "$1:$2",
                            "targetLabel": "__address__",
                        }
                    ],
                }
            ],
        },
    }


def companions(state: EndpointState, spec: VersionSpec) -> list[dict[str, Any]]:
    """What goes with a version's Deployment: a PodDisruptionBudget when it may run more
    than one pod, a HorizontalPodAutoscaler when it autoscales, a PodMonitor when asked.

    Example:
        >>> from mlshift._state import VersionSpec
        >>> s = EndpointState("churn").with_version(VersionSpec("v1", autoscale=(2, 8, 70)))
        >>> [o["kind"] for o in companions(s, s.versions[0])]
        ['PodDisruptionBudget', 'HorizontalPodAutoscaler']
    """
    out = []
    if spec.replicas > 1 or (spec.autoscale and spec.autoscale[1] > 1):
        out.append(render_disruption_budget(state, spec))
    if spec.autoscale:
        out.append(render_autoscaler(state, spec))
    if spec.pod.pod_monitor:
        out.append(render_pod_monitor(state, spec))
    return out
