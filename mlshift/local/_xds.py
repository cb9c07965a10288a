"""The translator: Istio DestinationRule + VirtualService in, Envoy xDS resources out. Pure.

Routes go through one internal model (``RouteTable`` of ``Route``s): ``read_virtual_service``
here and ``read_http_route`` (``_httproute``, the Gateway API form) both produce it, and
``envoy_routes`` turns it into Envoy's RouteConfiguration, so both routings behave alike.

The local mesh runs a real Envoy configured from the very objects the Kubernetes target
applies, so what a notebook sees locally is Istio's routing, not a simulation of it:

- each DestinationRule subset becomes one Envoy cluster (``<host>_<subset>``) pointing at that
  version's ``model_server`` on loopback, with an active HTTP health check on
  ``/v2/health/ready`` every half second, so a killed version (connection refused) is seen as
  down within about a second and a half, and no panic threshold, so a version seen as down gets
  a fast 503 instead of traffic. A busy version is not one that is down: each check may take
  ``HEALTH_TIMEOUT_S`` and it takes ``UNHEALTHY_THRESHOLD`` failures in a row, so a version is
  ejected for slowness only after about ten seconds without an answer (a hung one);
- each VirtualService HTTP route becomes one Envoy route per match block (a route with no match
  matches everything): header, URI and method matches, one cluster or ``weighted_clusters``,
  ``request_mirror_policies`` for the mirror, ``retry_policy`` and ``timeout``. Retries stay in
  the cluster the route picked, as Istio's do within a subset;
- ``discovery_response`` wraps either for the watched files Envoy reads them from. The
  bootstrap that points Envoy at those files (and puts its admin on a private Unix socket) is
  ``mlshift.local._envoy_bootstrap``.

Anything the translator does not understand raises ``RoutingError`` naming the field, before a
file is written, so Envoy never sees half a translation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlshift._durations import parse_duration
from mlshift._exceptions import RoutingError

__all__ = [
    "CLUSTER_TYPE",
    "ROUTE_CONFIG_NAME",
    "ROUTE_TYPE",
    "STAT_PREFIX",
    "Match",
    "Route",
    "RouteTable",
    "cluster_name",
    "clusters",
    "clusters_for",
    "discovery_response",
    "empty_route_configuration",
    "envoy_routes",
    "read_virtual_service",
    "retry_policy",
    "route_configuration",
    "subsets_of",
]

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ROUTE_CONFIG_NAME = "mlshift"
STAT_PREFIX = "router"
HEALTH_PATH = "/v2/health/ready"
HEALTH_TIMEOUT_S = 2.5
"""How long one health check may take: a server busy with large bodies still answers in it."""
UNHEALTHY_THRESHOLD = 3
"""Failed checks in a row before a version is taken out of routing (slow ones count too)."""
HEALTH_INTERVAL_S = 0.5

# Istio passes retryOn through to Envoy (HTTP and gRPC policies in one list); numbers become
# retriable status codes.
_HTTP_RETRY_ON = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
}
_GRPC_RETRY_ON = {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
_MATCH_KINDS = {"exact": "exact", "prefix": "prefix", "regex": "safe_regex"}
_ROUTE_KEYS = {"name", "match", "route", "timeout", "retries", "mirror", "mirrorPercentage"}
_MATCH_KEYS = {"name", "uri", "headers", "method", "ignoreUriCase"}


def cluster_name(host: str, subset: str) -> str:
    """Return the Envoy cluster of a DestinationRule subset.

    ``_`` cannot occur in DNS-1123 names, so the two parts can always be told apart in stats.

    Example:
        >>> cluster_name("churn", "v2")
        'churn_v2'
    """
    return f"{host}_{subset}"


def _seconds(value: object, *, what: str) -> str:
    try:
        seconds = parse_duration(value if isinstance(value, int | float) else str(value), what=what)
    except ValueError as exc:
        raise RoutingError(f"{exc}; fix the VirtualService's {what}") from exc
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _short_name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def clusters(
    destination_rule: Mapping[str, Any],
    ports: Mapping[str, int],
    *,
    health_interval_s: float = HEALTH_INTERVAL_S,
) -> list[dict[str, Any]]:
    """Return one Envoy cluster per subset of ``destination_rule``.

    Args:
        destination_rule: the Istio DestinationRule (``spec.host``, ``spec.subsets``).
        ports: the loopback port each subset's (version's) server listens on.
        health_interval_s: how often Envoy checks ``/v2/health/ready``, also without traffic.

    Raises:
        RoutingError: a subset has no server port.

    Example:
        >>> dr = {"spec": {"host": "churn", "subsets": [{"name": "v1"}]}}
        >>> clusters(dr, {"v1": 9001})[0]["name"]
        'churn_v1'
    """
    spec = destination_rule.get("spec") or {}
    versions = [str(subset["name"]) for subset in spec.get("subsets") or ()]
    return clusters_for(
        str(spec.get("host") or ""),
        versions,
        ports,
        health_interval_s=health_interval_s,
        what=f"DestinationRule {_short_name(destination_rule)!r} has subset",
    )


def clusters_for(
    host: str,
    versions: Sequence[str],
    ports: Mapping[str, int],
    *,
    health_interval_s: float = HEALTH_INTERVAL_S,
    what: str = "the endpoint has version",
) -> list[dict[str, Any]]:
    """Return one Envoy cluster per version of ``host`` (a DestinationRule subset, or a
    Gateway API version Service).

    Raises:
        RoutingError: a version has no server port.

    Example:
        >>> clusters_for("churn", ["v1"], {"v1": 9001})[0]["name"]
        'churn_v1'
    """
    out: list[dict[str, Any]] = []
    for version in versions:
        if version not in ports:
            raise RoutingError(
                f"{what} {version!r} but no local server runs it; deploy {version!r} first or"
                " remove it"
            )
        name = cluster_name(host, version)
        interval = _seconds(health_interval_s, what="health check interval")
        address = {"socket_address": {"address": "127.0.0.1", "port_value": int(ports[version])}}
        out.append(
            {
                "@type": CLUSTER_TYPE,
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                },
                "health_checks": [
                    {
                        "timeout": _seconds(HEALTH_TIMEOUT_S, what="health check timeout"),
                        "interval": interval,
                        # Without this a version carrying no traffic is checked once a minute.
                        "no_traffic_interval": interval,
                        "unhealthy_threshold": UNHEALTHY_THRESHOLD,
                        "healthy_threshold": 1,
                        "http_health_check": {"path": HEALTH_PATH},
                    }
                ],
                # One host per cluster: under Envoy's default panic threshold (50 %) a failing
                # host is routed to anyway, so a hung version would hold requests until the
                # route timeout. At 0 a cluster with no healthy host answers 503 at once.
                "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
                # A local mesh gets bursts from one notebook; the defaults (1024) would turn a
                # large `ep.send` into 503 overflows that no cluster would show.
                "circuit_breakers": {
                    "thresholds": [
                        {
                            "max_connections": 100000,
                            "max_pending_requests": 100000,
                            "max_requests": 100000,
                            "max_retries": 100000,
                        }
                    ]
                },
            }
        )
    return out


def retry_policy(retries: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return Envoy's ``retry_policy`` for an Istio ``HTTPRetry`` (None: no retries).

    Example:
        >>> retry_policy({"attempts": 2, "retryOn": "connect-failure,503"})["retry_on"]
        'connect-failure,retriable-status-codes'
    """
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return None
    names: list[str] = []
    codes: list[int] = []
    for raw in str(retries.get("retryOn") or "connect-failure,refused-stream,5xx").split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit():
            codes.append(int(item))
        elif item in _HTTP_RETRY_ON or item in _GRPC_RETRY_ON:
            names.append(item)
        else:
            known = ", ".join(sorted(_HTTP_RETRY_ON | _GRPC_RETRY_ON))
            raise RoutingError(
                f"retryOn {item!r} is not a retry condition Envoy knows; use one of {known} or "
                "an HTTP status code"
            )
    if codes and "retriable-status-codes" not in names:
        names.append("retriable-status-codes")
    policy: dict[str, Any] = {"retry_on": ",".join(names), "num_retries": attempts}
    if codes:
        policy["retriable_status_codes"] = codes
    if retries.get("perTryTimeout"):
        policy["per_try_timeout"] = _seconds(retries["perTryTimeout"], what="perTryTimeout")
    return policy


@dataclass(frozen=True)
class Match:
    """One match block of a route (blocks of a route are ORed), in the router's own terms.

    ``path`` and each header condition are ``(kind, value)`` with kind ``exact``,
    ``prefix`` or ``regex`` (RE2, full match); no path means every path.
    """

    path: tuple[str, str] | None = None
    ignore_case: bool = False
    headers: tuple[tuple[str, str, str], ...] = ()
    """(lower-case name, kind, value) per header condition, all of which must hold."""
    method: tuple[str, str] | None = None


@dataclass(frozen=True)
class Route:
    """One route of the internal model both readers (VirtualService, HTTPRoute) produce."""

    name: str
    matches: tuple[Match, ...]
    backends: tuple[tuple[str, int], ...]
    """(version, weight) pairs; one backend with weight > 0 takes everything."""
    mirror: tuple[str, float] | None = None
    """(version, percent) copied and answered into the void."""
    timeout: str = "0s"
    """Envoy duration; ``0s`` is no timeout."""
    retries: Mapping[str, Any] | None = None
    """Istio's HTTPRetry form (``attempts``, ``retryOn``, ``perTryTimeout``)."""
    where: str = ""
    """Where the route came from, for error messages."""


@dataclass(frozen=True)
class RouteTable:
    """An endpoint's routes in the order they are tried (first match wins)."""

    host: str
    routes: tuple[Route, ...] = field(default=())


def _string_match(where: str, spec: Mapping[str, Any]) -> tuple[str, str]:
    kinds = [k for k in spec if k in _MATCH_KINDS]
    if len(kinds) != 1 or len(spec) != 1:
        raise RoutingError(
            f"{where} must have exactly one of exact, prefix or regex, got {dict(spec)!r}"
        )
    return kinds[0], str(spec[kinds[0]])


def _vs_match(where: str, block: Mapping[str, Any]) -> Match:
    unknown = sorted(set(block) - _MATCH_KEYS)
    if unknown:
        raise RoutingError(
            f"{where} uses {', '.join(unknown)}, which the local router does not support; "
            "match on uri, headers or method"
        )
    headers = tuple(
        (str(name).lower(), *_string_match(f"{where}.headers.{name}", spec))
        for name, spec in (block.get("headers") or {}).items()
    )
    return Match(
        path=_string_match(f"{where}.uri", block["uri"]) if block.get("uri") else None,
        ignore_case=bool(block.get("ignoreUriCase")),
        headers=headers,
        method=_string_match(f"{where}.method", block["method"]) if block.get("method") else None,
    )


def _version_of(where: str, destination: Mapping[str, Any], hosts: Sequence[str]) -> str:
    host = str(destination.get("host") or "")
    subset = destination.get("subset")
    if host not in hosts:
        raise RoutingError(
            f"{where} sends traffic to host {host!r}; the local router only serves "
            f"{', '.join(map(repr, hosts))}"
        )
    if not subset:
        raise RoutingError(
            f"{where} names no subset; every local destination must pick a version's subset"
        )
    return str(subset)


def _vs_route(where: str, http: Mapping[str, Any], hosts: Sequence[str]) -> Route:
    destinations = list(http.get("route") or ())
    if not destinations:
        raise RoutingError(f"{where} has no destinations; give it at least one subset")
    backends = []
    for i, item in enumerate(destinations):
        weight = item.get("weight", 100 if len(destinations) == 1 else 0)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise RoutingError(
                f"{where}.route[{i}] weight must be a whole number >= 0, got {weight!r}"
            )
        backends.append((_version_of(f"{where}.route[{i}]", item["destination"], hosts), weight))
    mirror = None
    if http.get("mirror"):
        percent = float((http.get("mirrorPercentage") or {}).get("value", 100.0))
        mirror = (_version_of(f"{where}.mirror", http["mirror"], hosts), percent)
    return Route(
        name=str(http.get("name") or ""),
        matches=tuple(
            _vs_match(f"{where}.match[{j}]", block)
            for j, block in enumerate(http.get("match") or [{}])
        ),
        backends=tuple(backends),
        mirror=mirror,
        timeout=_seconds(http["timeout"], what="timeout") if http.get("timeout") else "0s",
        retries=http.get("retries") or {"attempts": 0},
        where=where,
    )


def read_virtual_service(virtual_service: Mapping[str, Any]) -> RouteTable:
    """Read a VirtualService's HTTP routes into the internal model (order kept).

    The endpoint's host is the VirtualService's first host; destinations on other hosts are
    refused.

    Raises:
        RoutingError: a route uses something the local router cannot do, or names no subset.

    Example:
        >>> vs = {"spec": {"hosts": ["churn"], "http": [{"name": "mlshift", "route": [
        ...     {"destination": {"host": "churn", "subset": "v1"}, "weight": 100}]}]}}
        >>> read_virtual_service(vs).routes[0].backends
        (('v1', 100),)
    """
    spec = virtual_service.get("spec") or {}
    hosts = [str(h) for h in spec.get("hosts") or ()]
    if not hosts:
        raise RoutingError(
            f"VirtualService {_short_name(virtual_service)!r} has no hosts; it needs its "
            "endpoint's name as the first host"
        )
    routes = []
    for i, http in enumerate(spec.get("http") or ()):
        where = f"VirtualService http[{i}] ({http.get('name') or 'unnamed'})"
        unknown = sorted(set(http) - _ROUTE_KEYS)
        if unknown:
            raise RoutingError(
                f"{where} uses {', '.join(unknown)}, which the local router does not support; "
                "remove it or use a cluster target"
            )
        routes.append(_vs_route(where, http, hosts))
    return RouteTable(hosts[0], tuple(routes))


def _envoy_string(kind: str, value: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}


def _envoy_match(match: Match) -> dict[str, Any]:
    out: dict[str, Any] = {"prefix": "/"}
    if match.path is not None:
        kind, value = match.path
        out = {"path": value} if kind == "exact" else _envoy_string(kind, value)
    if match.ignore_case:
        out["case_sensitive"] = False
    headers = [
        {"name": name, "string_match": _envoy_string(kind, value)}
        for name, kind, value in match.headers
    ]
    if match.method is not None:
        headers.append({"name": ":method", "string_match": _envoy_string(*match.method)})
    if headers:
        out["headers"] = headers
    return out


def _envoy_action(route: Route, host: str) -> dict[str, Any]:
    action: dict[str, Any] = {}
    if len(route.backends) == 1 and route.backends[0][1] > 0:
        action["cluster"] = cluster_name(host, route.backends[0][0])
    else:
        action["weighted_clusters"] = {
            "clusters": [{"name": cluster_name(host, v), "weight": w} for v, w in route.backends]
        }
    action["timeout"] = route.timeout
    retries = retry_policy(route.retries or {"attempts": 0})
    if retries:
        action["retry_policy"] = retries
    if route.mirror is not None:
        version, percent = route.mirror
        if not 0.0 <= percent <= 100.0 or math.isnan(percent):
            raise RoutingError(f"{route.where} mirror percent must be within 0-100, got {percent}")
        action["request_mirror_policies"] = [
            {
                "cluster": cluster_name(host, version),
                "runtime_fraction": {
                    "default_value": {
                        "numerator": round(percent * 10_000),
                        "denominator": "MILLION",
                    }
                },
            }
        ]
    return action


def envoy_routes(table: RouteTable, *, name: str = ROUTE_CONFIG_NAME) -> dict[str, Any]:
    """Return the Envoy RouteConfiguration for the internal model.

    A route with several match blocks becomes several Envoy routes (they are ORed).

    Example:
        >>> table = RouteTable("churn", (Route("mlshift", (Match(),), (("v1", 100),)),))
        >>> envoy_routes(table)["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
        'churn_v1'
    """
    routes: list[dict[str, Any]] = []
    for route in table.routes:
        action = _envoy_action(route, table.host)
        for match in route.matches or (Match(),):
            entry: dict[str, Any] = {"match": _envoy_match(match), "route": action}
            if route.name:
                entry["name"] = route.name
            routes.append(entry)
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": [{"name": table.host, "domains": ["*"], "routes": routes}],
    }


def route_configuration(
    virtual_service: Mapping[str, Any], *, name: str = ROUTE_CONFIG_NAME
) -> dict[str, Any]:
    """Return the Envoy RouteConfiguration for a VirtualService's HTTP routes.

    Routes keep the VirtualService's order (first match wins); a route with several match
    blocks becomes several Envoy routes, since Istio ORs them. The endpoint's host is the
    VirtualService's first host; destinations on other hosts are refused.

    Raises:
        RoutingError: a route uses something the local router cannot do, or names no subset.

    Example:
        >>> vs = {"spec": {"hosts": ["churn"], "http": [{"name": "mlshift", "route": [
        ...     {"destination": {"host": "churn", "subset": "v1"}, "weight": 100}]}]}}
        >>> route_configuration(vs)["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
        'churn_v1'
    """
    return envoy_routes(read_virtual_service(virtual_service), name=name)


def subsets_of(virtual_service: Mapping[str, Any]) -> set[str]:
    """Return every subset the VirtualService's routes and mirrors send traffic to.

    Example:
        >>> subsets_of({"spec": {"http": [{"route": [{"destination": {"subset": "v1"}}]}]}})
        {'v1'}
    """
    out: set[str] = set()
    for http in (virtual_service.get("spec") or {}).get("http") or ():
        for item in http.get("route") or ():
            subset = (item.get("destination") or {}).get("subset")
            if subset:
                out.add(str(subset))
        subset = (http.get("mirror") or {}).get("subset")
        if subset:
            out.add(str(subset))
    return out


def empty_route_configuration(*, name: str = ROUTE_CONFIG_NAME) -> dict[str, Any]:
    """Return a route configuration with no routes (every request gets 404 ``NR``)."""
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": [{"name": "none", "domains": ["*"], "routes": []}],
    }


def discovery_response(resources: Sequence[Mapping[str, Any]], version: str) -> dict[str, Any]:
    """Wrap resources the way Envoy reads them from a ``path_config_source`` file.

    Example:
        >>> discovery_response([], "7")
        {'version_info': '7', 'resources': []}
    """
    return {"version_info": version, "resources": [dict(r) for r in resources]}
