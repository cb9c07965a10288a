"""Gateway API routing on a cluster: which routing to use, and the HTTPRoute's managed rules.

``detect`` answers ``routing="auto"``: the Gateway API when the cluster serves
``gateway.networking.k8s.io/v1`` HTTPRoutes and the namespace is in Istio's ambient mode
(``istio.io/dataplane-mode=ambient``) or an HTTPRoute already routes the endpoint's Service;
else Istio's VirtualService. In ambient mode L7 routing (weights, headers, mirror) happens in
a waypoint proxy only: without ``istio.io/use-waypoint`` on the namespace or the Service the
weights do nothing, and ``detect`` says so with the fix.

Writes keep the VirtualService rules (``mlshift.kube._engine``): read the HTTPRoute, refuse
when its managed rules are not the ones the change was computed from, swap only mlshift's
rules (``merge_rules``), and merge-patch with the ``resourceVersion`` read (409 ->
``ConflictError``). The traffic history lives in the HTTPRoute's
``mlshift.io/traffic-history`` annotation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlshift._exceptions import APIConflictError, APIError, APINotFoundError, ConflictError
from mlshift._render import MANAGED_BY, MANAGED_ROUTE
from mlshift._render_gateway import (
    is_managed_rule,
    merge_rules,
    render_http_route,
    render_waypoint,
    version_of_backend,
)
from mlshift._state import (
    EndpointState,
    HeaderRoute,
    Mirror,
    RoutePolicy,
    Routing,
    TrafficState,
    VersionSpec,
)
from mlshift.kube._api import HTTP_ROUTES, SERVICES, KubeAPI
from mlshift.kube._live import (
    HISTORY_ANNOTATION,
    dig,
    history_from_annotation,
    history_to_annotation,
    version_from_deployment,
)

__all__ = [
    "Detection",
    "detect",
    "load_gateway",
    "patch_rules",
    "rules_to_traffic",
    "same_rules",
    "waypoint",
]

log = logging.getLogger("mlshift.kube")

AMBIENT_LABEL = "istio.io/dataplane-mode"
WAYPOINT_LABEL = "istio.io/use-waypoint"
_DEFAULT_MATCHES = [{"path": {"type": "PathPrefix", "value": "/"}}]


@dataclass(frozen=True)
class Detection:
    """What ``routing="auto"`` found: the routing to use and why; ambient and waypoint."""

    routing: Routing
    reason: str
    ambient: bool = False
    waypoint: str | None = None

    @property
    def warning(self) -> str:
        """What is wrong with this routing here (empty: nothing): ambient with no waypoint."""
        if self.routing != "gateway-api" or not self.ambient or self.waypoint:
            return ""
        return (
            "the namespace is in ambient mode but has no waypoint, so HTTPRoute weights, header"
            " rules and mirrors do nothing (L7 routing happens in the waypoint). Fix: `istioctl"
            " waypoint apply -n NAMESPACE --enroll-namespace`, or apply"
            " mlshift.waypoint(NAMESPACE) and label the namespace istio.io/use-waypoint=waypoint"
        )


def waypoint(namespace: str, *, name: str = "waypoint") -> dict[str, Any]:
    """Return the waypoint Gateway that ambient mode needs for HTTPRoute weights to work.

    Apply it (``kubectl apply -f``) and label the namespace ``istio.io/use-waypoint=<name>``;
    ``istioctl waypoint apply -n NAMESPACE --enroll-namespace`` does both.

    Example:
        >>> import mlshift
        >>> mlshift.waypoint("ml")["spec"]["gatewayClassName"]
        'istio-waypoint'
    """
    return render_waypoint(namespace, name=name)


def _served(api: KubeAPI) -> bool:
    try:
        found = api.get_path("/apis/gateway.networking.k8s.io/v1", "discover the Gateway API")
    except APIError as exc:  # 404: not installed; 403: cannot tell, so not used
        log.debug("Gateway API v1 not usable: %s", exc)
        return False
    return any(r.get("name") == "httproutes" for r in found.get("resources") or ())


def _routes_service(route: Mapping[str, Any], endpoint: str, namespace: str) -> bool:
    names = {endpoint, f"{endpoint}.{namespace}", f"{endpoint}.{namespace}.svc.cluster.local"}
    parents = dig(route, "spec", "parentRefs") or ()
    if any(p.get("kind") == "Service" and p.get("name") == endpoint for p in parents):
        return True
    return any(h in names for h in dig(route, "spec", "hostnames") or ())


def detect(api: KubeAPI, namespace: str, endpoint: str) -> Detection:
    """Pick the routing for ``endpoint`` in ``namespace`` (see the module docstring).

    Reading the namespace's labels needs ``get namespaces`` (cluster-wide); without it
    ambient mode is not detected and only existing HTTPRoutes decide.
    """
    if not _served(api):
        return Detection("istio", "the cluster serves no gateway.networking.k8s.io/v1 HTTPRoute")
    labels: Mapping[str, str] = {}
    try:
        ns = api.get_path(f"/api/v1/namespaces/{namespace}", f"get namespace {namespace}")
        labels = dig(ns, "metadata", "labels") or {}
    except APIError as exc:
        log.info(
            "cannot read the labels of namespace %s (%s); ambient not detected", namespace, exc
        )
    ambient = labels.get(AMBIENT_LABEL) == "ambient"
    waypoint = labels.get(WAYPOINT_LABEL) or None
    if ambient and not waypoint:
        try:
            service = api.get(SERVICES, namespace, endpoint)
            waypoint = dig(service, "metadata", "labels", WAYPOINT_LABEL) or None
        except APIError:
            pass
    if ambient:
        return Detection("gateway-api", f"namespace {namespace} is ambient", True, waypoint)
    routes = api.list_objects(HTTP_ROUTES, namespace)
    if any(_routes_service(r, endpoint, namespace) for r in routes):
        return Detection("gateway-api", f"an HTTPRoute already routes {endpoint}", False, waypoint)
    return Detection("istio", f"namespace {namespace} is not ambient and no HTTPRoute routes it")


def rules_to_traffic(
    rules: Sequence[Mapping[str, Any]], endpoint: str, versions: Sequence[str]
) -> tuple[TrafficState, RoutePolicy]:
    """Read weights, header rules, mirror and timeout back from mlshift's managed rules.

    Example:
        >>> rule = {"name": "mlshift", "backendRefs": [{"name": "churn-v1", "weight": 100}]}
        >>> dict(rules_to_traffic([rule], "churn", ["v1"])[0].weights)
        {'v1': 100}
    """
    main = next((r for r in rules if r.get("name") == MANAGED_ROUTE), None)
    if main is None:
        return TrafficState(), RoutePolicy()
    weights: dict[str, int] = {}
    refs = list(main.get("backendRefs") or ())
    for ref in refs:
        version = version_of_backend(endpoint, str(ref.get("name") or ""))
        if version in versions:
            weights[str(version)] = int(ref.get("weight", 1 if len(refs) == 1 else 0) or 0)
    mirror = None
    for f in main.get("filters") or ():
        spec = f.get("requestMirror") or {}
        version = version_of_backend(endpoint, str(dig(spec, "backendRef", "name") or ""))
        if f.get("type") == "RequestMirror" and version in versions:
            fraction = spec.get("fraction")
            percent = (
                100.0 * fraction["numerator"] / fraction.get("denominator", 100)
                if fraction
                else float(spec.get("percent", 100))
            )
            mirror = Mirror(str(version), percent)
    prefix = MANAGED_ROUTE + "-header-"
    header_rules = sorted(
        (r for r in rules if str(r.get("name") or "").startswith(prefix)),
        key=lambda r: int(str(r["name"])[len(prefix) :] or 0),
    )
    headers = []
    for r in header_rules:
        match = ((r.get("matches") or [{}])[0].get("headers") or [{}])[0]
        version = version_of_backend(endpoint, str(((r.get("backendRefs") or [{}])[0]).get("name")))
        if not match or version not in versions:
            continue
        value = str(match.get("value") or "")
        if match.get("type", "Exact") == "Exact":
            headers.append(HeaderRoute(str(version), str(match["name"]), value))
        else:
            headers.append(HeaderRoute(str(version), str(match["name"]), value, "regex"))
    timeout = dig(main, "timeouts", "request")
    policy = RoutePolicy(timeout_s=_seconds(timeout) if timeout else None)
    return TrafficState(weights, tuple(headers), mirror), policy


def _seconds(text: str) -> float:
    from mlshift._durations import parse_duration

    return parse_duration(str(text), what="HTTPRoute timeout")


def _norm(rule: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(rule)
    out.setdefault("matches", _DEFAULT_MATCHES)
    return out


def _covers(live: object, written: object) -> bool:
    if isinstance(live, Mapping) and isinstance(written, Mapping):
        return all(k in live and _covers(live[k], v) for k, v in written.items())
    if isinstance(live, list) and isinstance(written, list):
        return len(live) == len(written) and all(map(_covers, live, written))
    return live == written


def same_rules(
    live: Iterable[Mapping[str, Any]] | None, previous: Sequence[Mapping[str, Any]]
) -> bool:
    """Tell whether the managed rules among ``live`` are still ``previous`` (server defaults
    such as a rule's implicit ``matches`` or a match's ``type`` ignored).

    Example:
        >>> rule = {"name": "mlshift", "backendRefs": [{"name": "churn-v1", "weight": 100}]}
        >>> same_rules([{"name": "admin"}, rule], [rule]), same_rules([], [rule])
        (True, False)
    """
    managed = [_norm(r) for r in live or () if is_managed_rule(r)]
    return _covers(managed, [_norm(r) for r in previous])


def load_gateway(
    api: KubeAPI, namespace: str, name: str, deployments: Mapping[str, Mapping[str, Any]]
) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
    """Rebuild a Gateway API endpoint from its HTTPRoute and version Services (None: none).

    A version counts once its Service exists (its rollout was ready); its order is the
    order of the HTTPRoute's version rules.
    """
    if HTTP_ROUTES.version not in api.served_versions(HTTP_ROUTES.group):
        return None  # no Gateway API CRDs: no HTTPRoute can route it
    try:
        route = api.get(HTTP_ROUTES, namespace, name)
    except APINotFoundError:
        return None
    services = api.list_objects(SERVICES, namespace, {"app": name, **MANAGED_BY})
    have = {str(dig(s, "metadata", "labels", "version")) for s in services}
    rules = list(dig(route, "spec", "rules") or ())
    prefix = MANAGED_ROUTE + "-version-"
    ordered = [
        str(r["name"])[len(prefix) :] for r in rules if str(r.get("name")).startswith(prefix)
    ]
    names = [v for v in ordered if v in have] + sorted(have - set(ordered) - {"None"})
    versions = tuple(
        version_from_deployment(deployments[v]) if v in deployments else VersionSpec(v)
        for v in names
    )
    if not versions:
        return None
    traffic, policy = rules_to_traffic(rules, name, names)
    parents = dig(route, "spec", "parentRefs") or ()
    gateways = [
        f"{p['namespace']}/{p['name']}" if p.get("namespace") else str(p["name"])
        for p in parents
        if p.get("kind") == "Gateway"
    ]
    if gateways and any(p.get("kind") == "Service" for p in parents):
        gateways.append("mesh")
    state = EndpointState(
        name=name,
        namespace=namespace,
        versions=versions,
        traffic=traffic,
        policy=policy,
        hosts=tuple(dig(route, "spec", "hostnames") or ()),
        gateways=tuple(gateways),
        routing="gateway-api",
    )
    history = history_from_annotation(dig(route, "metadata", "annotations", HISTORY_ANNOTATION))
    return state, history


def patch_rules(
    api: KubeAPI,
    state: EndpointState,
    managed: list[dict[str, Any]],
    history: Sequence[TrafficState],
    previous: list[dict[str, Any]] | None = None,
) -> None:
    """Swap mlshift's rules of the HTTPRoute for ``managed`` (create it if missing).

    Raises:
        ConflictError: the managed rules are not ``previous`` any more, or the route changed
            between the read and the write (409); nothing was written.
    """
    ns, name = state.namespace, state.name
    annotations = {HISTORY_ANNOTATION: history_to_annotation(history)}
    try:
        live: dict[str, Any] | None = api.get(HTTP_ROUTES, ns, name)
    except APINotFoundError:
        live = None
    if previous is not None and not same_rules(dig(live, "spec", "rules"), previous):
        raise ConflictError(
            f"the rules of HTTPRoute {ns}/{name} changed since they were read: someone else"
            " moved the traffic meanwhile, and nothing was written. Re-read them"
            " (ep.status()) and try again",
        )
    try:
        if live is None:
            route = render_http_route(state)
            route["spec"]["rules"] = managed
            route["metadata"]["annotations"] = annotations
            api.create(HTTP_ROUTES, ns, route)
        else:
            metadata: dict[str, Any] = {"annotations": annotations}
            version = dig(live, "metadata", "resourceVersion")
            if version:
                metadata["resourceVersion"] = version
            rules = merge_rules(dig(live, "spec", "rules"), managed)
            api.patch(HTTP_ROUTES, ns, name, {"metadata": metadata, "spec": {"rules": rules}})
    except APIConflictError as exc:
        raise ConflictError(
            f"HTTPRoute {ns}/{name} changed while mlshift wrote its rules (409); nothing was"
            " written. Re-read the endpoint and try again (the SDK's verbs do)"
        ) from exc
