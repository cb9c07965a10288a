"""An endpoint's desired state: its versions and how traffic is split between them. Pure.

Both engines consume this (through the renderer), the facade builds it up, and dry runs
work on it with no cluster at all. Everything here is an immutable value with a JSON form,
so the local engine can keep it in a file and the Kubernetes engine in an annotation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlshift._exceptions import ConfigError, InvalidArgumentError
from mlshift._names import check_name

__all__ = [
    "ROUTINGS",
    "EndpointState",
    "HeaderRoute",
    "Mirror",
    "PodOptions",
    "Resources",
    "RoutePolicy",
    "Routing",
    "TrafficState",
    "VersionSpec",
]

MatchKind = Literal["exact", "prefix", "regex"]
Routing = Literal["istio", "gateway-api"]
"""What routes an endpoint: Istio's VirtualService + DestinationRule, or a Gateway API HTTPRoute."""
ROUTINGS: tuple[Routing, ...] = ("istio", "gateway-api")


@dataclass(frozen=True)
class Resources:
    """Container resources of one version's pods.

    Defaults fit a scikit-learn model serving single rows: a quarter core and 512 MiB
    guaranteed, bursting to two cores and 1 GiB.
    """

    cpu_request: str = "250m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    gpus: int = 0
    """NVIDIA GPUs per pod (``nvidia.com/gpu``, requested and limited alike)."""

    def updated(self, changes: Resources | Mapping[str, Any] | None) -> Resources:
        """Return a copy with the fields in ``changes`` set; a ``Resources`` replaces all.

        Raises ``ConfigError`` for an unknown field.

        Example:
            >>> Resources().updated({"gpus": 1, "memory_limit": "16Gi"}).gpus
            1
        """
        if changes is None:
            return self
        if isinstance(changes, Resources):
            return changes
        known = {f.name for f in dataclasses.fields(Resources)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f"unknown resources key(s) {', '.join(unknown)}; use {', '.join(sorted(known))},"
                " e.g. resources={'cpu_request': '500m', 'memory_limit': '2Gi', 'gpus': 1}"
            )
        values: dict[str, Any] = {k: str(v) for k, v in changes.items() if k != "gpus"}
        if "gpus" in changes:
            values["gpus"] = int(changes["gpus"])
            if values["gpus"] < 0:
                raise ConfigError(f"gpus must be 0 or more, got {values['gpus']}")
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class PodOptions:
    """How a version's pods start and stop on a cluster (the local target ignores these).

    ``startup_s`` is how long the model may take to load before the kubelet restarts the
    pod (a startup probe; large models need minutes). ``drain_s`` is how long a pod keeps
    serving after it is told to stop, before the server drains: endpoints and sidecars
    learn that a pod is going away a few seconds after it does, and an idle pod that quit at
    once would meanwhile refuse the requests still routed to it.
    """

    startup_s: float = 120.0
    drain_s: float = 5.0
    sidecar: bool = True
    """Label the pods ``sidecar.istio.io/inject: "true"`` (False in an ambient namespace)."""
    pod_monitor: bool = False
    """Write a Prometheus Operator ``PodMonitor`` for the pods (it ignores annotations)."""
    scrape_interval_s: float = 15.0
    """How often Prometheus scrapes the pods (the PodMonitor's ``interval``)."""
    service_account: str | None = None
    """The pods' ServiceAccount (its token is then mounted); None: no token at all."""
    image_pull_secrets: tuple[str, ...] = ()
    """Secrets with the registry's credentials, for a private registry."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Node labels the pods must run on, e.g. ``{"cloud.google.com/gke-accelerator": ...}``."""
    tolerations: tuple[Mapping[str, Any], ...] = ()
    """Kubernetes tolerations, e.g. ``{"key": "nvidia.com/gpu", "operator": "Exists",
    "effect": "NoSchedule"}`` for tainted GPU nodes."""


@dataclass(frozen=True)
class VersionSpec:
    """One model version: what serves it and where its bytes come from."""

    name: str
    model_sha256: str = ""
    image: str | None = None
    """Image reference by digest (Kubernetes target)."""
    bundle: str | None = None
    """Bundle directory (local target)."""
    replicas: int = 1
    resources: Resources = field(default_factory=Resources)
    trust_pickle: bool = False
    """The model is a pickle its deployer trusts: model_server runs with ``--trust-pickle``."""
    pod: PodOptions = field(default_factory=PodOptions)
    autoscale: tuple[int, int, int] | None = None
    """``(min, max, target CPU %)`` for a HorizontalPodAutoscaler; None: ``replicas`` pods."""

    def __post_init__(self) -> None:
        check_name(self.name, kind="version")


@dataclass(frozen=True)
class HeaderRoute:
    """Requests whose ``header`` matches ``value`` go to ``version``, whatever the weights."""

    version: str
    header: str
    value: str
    match: MatchKind = "exact"


@dataclass(frozen=True)
class Mirror:
    """A copy of ``percent`` % of live requests is sent to ``version``; its answers are dropped."""

    version: str
    percent: float = 100.0


@dataclass(frozen=True)
class RoutePolicy:
    """Timeout and retries of the managed route (Istio's HTTPRoute fields).

    ``retry_on`` is Istio's own default, which an explicit ``retryOn`` replaces rather than
    extends: connection failures, and 503 (``retriable-status-codes`` with the code ``503``:
    a pod that is starting or stopping), within the chosen subset. Other 5xx answers from a
    model are not retried, since a model that fails on an input fails again.
    """

    timeout_s: float | None = 30.0
    attempts: int = 2
    per_try_timeout_s: float | None = None
    retry_on: str = (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503"
    )


@dataclass(frozen=True)
class TrafficState:
    """Weights, header rules and mirror: one entry in the traffic history."""

    weights: Mapping[str, int] = field(default_factory=dict)
    headers: tuple[HeaderRoute, ...] = ()
    mirror: Mirror | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (see ``from_json``)."""
        return {
            "weights": dict(self.weights),
            "headers": [dataclasses.asdict(h) for h in self.headers],
            "mirror": dataclasses.asdict(self.mirror) if self.mirror else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrafficState:
        """Rebuild a state written by ``to_json``."""
        mirror = data.get("mirror")
        return cls(
            weights={str(k): int(v) for k, v in dict(data.get("weights") or {}).items()},
            headers=tuple(HeaderRoute(**h) for h in data.get("headers") or ()),
            mirror=Mirror(**mirror) if mirror else None,
        )


@dataclass(frozen=True)
class EndpointState:
    """Everything the renderer needs to produce an endpoint's objects."""

    name: str
    namespace: str = "default"
    versions: tuple[VersionSpec, ...] = ()
    traffic: TrafficState = field(default_factory=TrafficState)
    policy: RoutePolicy = field(default_factory=RoutePolicy)
    hosts: tuple[str, ...] = ()
    """Extra VirtualService hosts (e.g. an ingress host name) besides the endpoint's own."""
    gateways: tuple[str, ...] = ()
    """Istio gateways to bind; empty means the mesh only."""
    routing: Routing = "istio"
    """``"istio"`` (VirtualService) or ``"gateway-api"`` (HTTPRoute, one Service per version)."""

    def __post_init__(self) -> None:
        check_name(self.name, kind="endpoint name")
        if self.routing not in ROUTINGS:
            raise InvalidArgumentError(
                f"routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}"
            )

    @property
    def version_names(self) -> list[str]:
        """Names of the versions, in deployment order."""
        return [v.name for v in self.versions]

    def version(self, name: str) -> VersionSpec | None:
        """Return the version called ``name``, or None."""
        return next((v for v in self.versions if v.name == name), None)

    def with_version(self, spec: VersionSpec) -> EndpointState:
        """Return a copy with ``spec`` added (weight 0, or 100 when it is the first)."""
        others = tuple(v for v in self.versions if v.name != spec.name)
        weights = dict(self.traffic.weights)
        weights.setdefault(spec.name, 0 if others else 100)
        if not others:
            weights = {spec.name: 100}
        traffic = dataclasses.replace(self.traffic, weights=weights)
        return dataclasses.replace(self, versions=(*others, spec), traffic=traffic)

    def without_version(self, name: str) -> EndpointState:
        """Return a copy without version ``name`` and every rule that points at it."""
        t = self.traffic
        traffic = TrafficState(
            weights={v: w for v, w in t.weights.items() if v != name},
            headers=tuple(h for h in t.headers if h.version != name),
            mirror=t.mirror if t.mirror and t.mirror.version != name else None,
        )
        versions = tuple(v for v in self.versions if v.name != name)
        return dataclasses.replace(self, versions=versions, traffic=traffic)

    def with_traffic(self, traffic: TrafficState) -> EndpointState:
        """Return a copy routing as ``traffic`` says."""
        return dataclasses.replace(self, traffic=traffic)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (see ``from_json``)."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "versions": [dataclasses.asdict(v) for v in self.versions],
            "traffic": self.traffic.to_json(),
            "policy": dataclasses.asdict(self.policy),
            "hosts": list(self.hosts),
            "gateways": list(self.gateways),
            "routing": self.routing,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointState:
        """Rebuild a state written by ``to_json``."""
        versions = []
        for item in data.get("versions") or ():
            raw = dict(item)
            raw["resources"] = Resources(**(raw.get("resources") or {}))
            pod = dict(raw.get("pod") or {})
            pod["image_pull_secrets"] = tuple(pod.get("image_pull_secrets") or ())
            pod["tolerations"] = tuple(pod.get("tolerations") or ())
            raw["pod"] = PodOptions(**pod)
            if raw.get("autoscale"):
                raw["autoscale"] = tuple(raw["autoscale"])
            versions.append(VersionSpec(**raw))
        return cls(
            name=data["name"],
            namespace=data.get("namespace", "default"),
            versions=tuple(versions),
            traffic=TrafficState.from_json(data.get("traffic") or {}),
            policy=RoutePolicy(**(data.get("policy") or {})),
            hosts=tuple(data.get("hosts") or ()),
            gateways=tuple(data.get("gateways") or ()),
            routing=data.get("routing") or "istio",
        )
