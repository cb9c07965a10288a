"""The Gateway API renderer: the same endpoint state, routed by an HTTPRoute. Pure.

For ``routing="gateway-api"`` an endpoint is one Deployment per version (as for Istio), one
Service per version (``<endpoint>-<version>``, selecting that version's pods: an HTTPRoute
cannot name DestinationRule subsets, istio/api#3517), the endpoint's Service, and one
``HTTPRoute`` (``gateway.networking.k8s.io/v1``) whose managed rules mirror the
VirtualService's routes one for one:

- ``mlshift-version-<v>``: the Open Inference Protocol's version-pinned paths
  (``RegularExpression`` path match) always reach ``<v>``;
- ``mlshift-header-N``: header rules as header ``matches`` (a prefix rule becomes a regular
  expression, since the standard channel matches headers exactly or by regex only);
- ``mlshift``: the weighted ``backendRefs``, and the mirror as a ``RequestMirror`` filter with
  ``percent`` (GEP-3171, standard since v1.3; ``fraction`` for a non-whole percent).

Rule order is kept, and Istio ranks a regex path above a prefix and more header matches above
fewer, so the precedence equals the VirtualService's. In the mesh (GAMMA) the route's parent
is the endpoint's Service; with gateways named, the Gateways (``"mesh"`` keeps the Service).
The standard channel has no retries field: the mesh's default retry policy applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlshift._exceptions import RoutingError
from mlshift._render import (
    MANAGED_ROUTE,
    SERVICE_PORT,
    Manifests,
    deployment_name,
    is_managed_route,
    merge_routes,
    render,
    render_deployment,
    render_service,
    to_yaml,
    version_path_regex,
)
from mlshift._state import EndpointState, HeaderRoute, RoutePolicy, TrafficState
from mlshift._workload import object_meta

__all__ = [
    "GATEWAY_API",
    "GatewayManifests",
    "is_managed_rule",
    "managed_rules",
    "merge_rules",
    "render_any",
    "render_gateway",
    "render_http_route",
    "render_version_service",
    "render_waypoint",
    "version_of_backend",
    "version_service_name",
]

GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MAX_RULES = 16
"""An HTTPRoute holds at most 16 rules (the CRD's maxItems)."""

is_managed_rule = is_managed_route
merge_rules = merge_routes


def version_service_name(endpoint: str, version: str) -> str:
    """Return the Service of one version (``<endpoint>-<version>``, as its Deployment).

    Example:
        >>> version_service_name("churn", "v2")
        'churn-v2'
    """
    return deployment_name(endpoint, version)


def version_of_backend(endpoint: str, name: str) -> str | None:
    """Return the version a backend Service name stands for, or None if it is not one.

    Example:
        >>> version_of_backend("churn", "churn-v2"), version_of_backend("churn", "other")
        ('v2', None)
    """
    prefix = f"{endpoint}-"
    return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


def gateway_duration(seconds: float) -> str:
    """Return a Gateway API duration (``1h``, ``30s``, ``500ms``; whole units only).

    Example:
        >>> gateway_duration(30.0), gateway_duration(0.25), gateway_duration(90.5)
        ('30s', '250ms', '90500ms')
    """
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


def render_version_service(state: EndpointState, version: str) -> dict[str, Any]:
    """Return the Service of one version: port 80 ``http`` to its pods' port 8080."""
    service = render_service(state)
    service["metadata"] = object_meta(
        state, version_service_name(state.name, version), {"version": version}
    )
    service["spec"]["selector"] = {"app": state.name, "version": version}
    return service


def _backend(state: EndpointState, version: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "group": "",
        "kind": "Service",
        "name": version_service_name(state.name, version),
        "port": SERVICE_PORT,
    }
    if weight is not None:
        ref["weight"] = weight
    return ref


def _timeouts(rule: dict[str, Any], policy: RoutePolicy) -> None:
    if policy.timeout_s:
        rule["timeouts"] = {"request": gateway_duration(policy.timeout_s)}


def _header_match(rule: HeaderRoute) -> dict[str, Any]:
    if rule.match == "exact":
        kind, value = "Exact", rule.value
    elif rule.match == "prefix":
        kind, value = "RegularExpression", re.escape(rule.value) + ".*"
    else:
        kind, value = "RegularExpression", rule.value
    return {"headers": [{"type": kind, "name": rule.header.lower(), "value": value}]}


def _mirror_filter(state: EndpointState, version: str, percent: float) -> dict[str, Any]:
    mirror: dict[str, Any] = {"backendRef": _backend(state, version)}
    if float(percent).is_integer():
        mirror["percent"] = int(percent)
    else:  # 12.5 % -> 125/1000: the standard channel takes whole percents or a fraction
        mirror["fraction"] = {"numerator": round(percent * 10_000), "denominator": 1_000_000}
    return {"type": "RequestMirror", "requestMirror": mirror}


def managed_rules(
    state: EndpointState, traffic: TrafficState | None = None
) -> list[dict[str, Any]]:
    """Return mlshift's HTTPRoute rules: version-pinned paths, header rules, the weighted split.

    Raises:
        RoutingError: more than 16 rules (too many versions and header rules for one route).

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> s = EndpointState("churn").with_version(VersionSpec("v1"))
        >>> managed_rules(s)[-1]["backendRefs"][0]["name"]
        'churn-v1'
    """
    t = traffic or state.traffic
    rules: list[dict[str, Any]] = []
    for version in state.version_names:
        rule: dict[str, Any] = {
            "name": f"{MANAGED_ROUTE}-version-{version}",
            "matches": [
                {"path": {"type": "RegularExpression", "value": version_path_regex(version)}}
            ],
            "backendRefs": [_backend(state, version, 100)],
        }
        _timeouts(rule, state.policy)
        rules.append(rule)
    for i, header in enumerate(t.headers):
        rule = {
            "name": f"{MANAGED_ROUTE}-header-{i}",
            "matches": [_header_match(header)],
            "backendRefs": [_backend(state, header.version, 100)],
        }
        _timeouts(rule, state.policy)
        rules.append(rule)
    main: dict[str, Any] = {
        "name": MANAGED_ROUTE,
        "backendRefs": [
            _backend(state, v, int(t.weights.get(v, 0)))
            for v in state.version_names
            if v in t.weights
        ],
    }
    if t.mirror:
        main["filters"] = [_mirror_filter(state, t.mirror.version, t.mirror.percent)]
    _timeouts(main, state.policy)
    rules.append(main)
    if len(rules) > MAX_RULES:
        raise RoutingError(
            f"endpoint {state.name!r} needs {len(rules)} HTTPRoute rules (one per version, one "
            f"per header rule, one split) but an HTTPRoute holds {MAX_RULES}; remove versions "
            "or header rules, or use routing='istio'"
        )
    return rules


def _gateway_ref(name: str) -> dict[str, Any]:
    namespace, _, gateway = name.rpartition("/")
    ref: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway}
    if namespace:
        ref["namespace"] = namespace
    return ref


def parent_refs(state: EndpointState) -> list[dict[str, Any]]:
    """Return the route's parents: the endpoint's Service in the mesh, else the named Gateways.

    Example:
        >>> parent_refs(EndpointState("churn"))
        [{'group': '', 'kind': 'Service', 'name': 'churn', 'port': 80}]
    """
    mesh = {"group": "", "kind": "Service", "name": state.name, "port": SERVICE_PORT}
    if not state.gateways:
        return [mesh]
    refs = [_gateway_ref(g) for g in state.gateways if g != "mesh"]
    return [*refs, mesh] if "mesh" in state.gateways else refs


def render_http_route(state: EndpointState, traffic: TrafficState | None = None) -> dict[str, Any]:
    """Return the HTTPRoute with only mlshift's managed rules.

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> s = EndpointState("churn", routing="gateway-api").with_version(VersionSpec("v1"))
        >>> render_http_route(s)["spec"]["parentRefs"][0]["kind"]
        'Service'
    """
    spec: dict[str, Any] = {"parentRefs": parent_refs(state)}
    hosts = [h for h in state.hosts if h != state.name]
    if hosts and state.gateways:  # hostnames select Gateway listeners; a Service has none
        spec["hostnames"] = hosts
    spec["rules"] = managed_rules(state, traffic)
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": object_meta(state, state.name),
        "spec": spec,
    }


def render_waypoint(namespace: str, *, name: str = "waypoint") -> dict[str, Any]:
    """Return the waypoint Gateway ambient mode needs for L7 routing (what ``istioctl waypoint
    generate`` prints); label the namespace ``istio.io/use-waypoint=<name>`` to use it.

    Example:
        >>> render_waypoint("ml")["spec"]["gatewayClassName"]
        'istio-waypoint'
    """
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"istio.io/waypoint-for": "service"},
        },
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


@dataclass(frozen=True)
class GatewayManifests:
    """The objects of one endpoint routed by the Gateway API, ready to apply or to review."""

    deployments: dict[str, dict[str, Any]]
    version_services: dict[str, dict[str, Any]]
    service: dict[str, Any]
    http_route: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        """Every object in apply order: Deployments, version Services, Service, HTTPRoute."""
        return [
            *self.deployments.values(),
            *self.version_services.values(),
            self.service,
            self.http_route,
        ]

    def to_yaml(self) -> str:
        """Return the objects as one multi-document YAML string."""
        return to_yaml(self.all())


def render_gateway(state: EndpointState) -> GatewayManifests:
    """Render every object of an endpoint for Gateway API routing.

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> s = EndpointState("churn").with_version(VersionSpec("v1"))
        >>> [o["kind"] for o in render_gateway(s).all()]
        ['Deployment', 'Service', 'Service', 'HTTPRoute']
    """
    return GatewayManifests(
        deployments={v.name: render_deployment(state, v) for v in state.versions},
        version_services={v: render_version_service(state, v) for v in state.version_names},
        service=render_service(state),
        http_route=render_http_route(state),
    )


def render_any(state: EndpointState) -> Manifests | GatewayManifests:
    """Render an endpoint with the routing its state names (``state.routing``).

    Example:
        >>> from mlshift._state import EndpointState
        >>> type(render_any(EndpointState("churn", routing="gateway-api"))).__name__
        'GatewayManifests'
    """
    return render_gateway(state) if state.routing == "gateway-api" else render(state)


def backends_of(http_route: Mapping[str, Any], endpoint: str) -> set[str]:
    """Return every version the HTTPRoute's rules and mirrors send traffic to.

    Example:
        >>> backends_of({"spec": {"rules": [{"backendRefs": [{"name": "churn-v1"}]}]}}, "churn")
        {'v1'}
    """
    out: set[str] = set()
    for rule in (http_route.get("spec") or {}).get("rules") or ():
        refs: Iterable[Mapping[str, Any]] = rule.get("backendRefs") or ()
        mirrors = [
            (f.get("requestMirror") or {}).get("backendRef") or {}
            for f in rule.get("filters") or ()
        ]
        for ref in [*refs, *mirrors]:
            version = version_of_backend(endpoint, str(ref.get("name") or ""))
            if version:
                out.add(version)
    return out
