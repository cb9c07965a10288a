"""The translator: Istio DestinationRule + VirtualService in, Envoy xDS resources out. Pure.

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
from typing import Any

from mlshift._durations import parse_duration
from mlshift._exceptions import RoutingError

__all__ = [
    "CLUSTER_TYPE",
    "ROUTE_CONFIG_NAME",
    "ROUTE_TYPE",
    "STAT_PREFIX",
    "cluster_name",
    "clusters",
    "discovery_response",
    "empty_route_configuration",
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
    host = str(spec.get("host") or "")
    out: list[dict[str, Any]] = []
    for subset in spec.get("subsets") or ():
        version = str(subset["name"])
        if version not in ports:
            raise RoutingError(
                f"DestinationRule {_short_name(destination_rule)!r} has subset {version!r} but no "
                f"local server runs it; deploy {version!r} first or remove the subset"
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


def _string_match(where: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    kinds = [k for k in spec if k in _MATCH_KINDS]
    if len(kinds) != 1 or len(spec) != 1:
        raise RoutingError(
            f"{where} must have exactly one of exact, prefix or regex, got {dict(spec)!r}"
        )
    kind = kinds[0]
    value = str(spec[kind])
    if kind == "regex":
        return {"safe_regex": {"regex": value}}
    return {kind: value}


def _route_match(where: str, block: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(block) - _MATCH_KEYS)
    if unknown:
        raise RoutingError(
            f"{where} uses {', '.join(unknown)}, which the local router does not support; "
            "match on uri, headers or method"
        )
    match: dict[str, Any] = {"prefix": "/"}
    uri = block.get("uri")
    if uri:
        match = _string_match(f"{where}.uri", uri)
        if "safe_regex" in match:
            match = {"safe_regex": match["safe_regex"]}
        elif "exact" in match:
            match = {"path": match["exact"]}
    if block.get("ignoreUriCase"):
        match["case_sensitive"] = False
    headers = [
        {"name": str(name).lower(), "string_match": _string_match(f"{where}.headers.{name}", spec)}
        for name, spec in (block.get("headers") or {}).items()
    ]
    if block.get("method"):
        method = _string_match(f"{where}.method", block["method"])
        headers.append({"name": ":method", "string_match": method})
    if headers:
        match["headers"] = headers
    return match


def _cluster_of(where: str, destination: Mapping[str, Any], hosts: Sequence[str]) -> str:
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
    return cluster_name(hosts[0], str(subset))


def _route_action(where: str, http: Mapping[str, Any], hosts: Sequence[str]) -> dict[str, Any]:
    destinations = list(http.get("route") or ())
    if not destinations:
        raise RoutingError(f"{where} has no destinations; give it at least one subset")
    action: dict[str, Any] = {}
    if len(destinations) == 1 and int(destinations[0].get("weight", 100)) > 0:
        action["cluster"] = _cluster_of(where, destinations[0]["destination"], hosts)
    else:
        weighted = []
        for i, item in enumerate(destinations):
            weight = item.get("weight", 0)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise RoutingError(
                    f"{where}.route[{i}] weight must be a whole number >= 0, got {weight!r}"
                )
            cluster = _cluster_of(f"{where}.route[{i}]", item["destination"], hosts)
            weighted.append({"name": cluster, "weight": weight})
        action["weighted_clusters"] = {"clusters": weighted}
    action["timeout"] = _seconds(http["timeout"], what="timeout") if http.get("timeout") else "0s"
    retries = retry_policy(http.get("retries") or {"attempts": 0})
    if retries:
        action["retry_policy"] = retries
    if http.get("mirror"):
        percent = float((http.get("mirrorPercentage") or {}).get("value", 100.0))
        if not 0.0 <= percent <= 100.0 or math.isnan(percent):
            raise RoutingError(f"{where} mirrorPercentage must be within 0-100, got {percent}")
        action["request_mirror_policies"] = [
            {
                "cluster": _cluster_of(f"{where}.mirror", http["mirror"], hosts),
                "runtime_fraction": {
                    "default_value": {
                        "numerator": round(percent * 10_000),
                        "denominator": "MILLION",
                    }
                },
            }
        ]
    return action


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
    spec = virtual_service.get("spec") or {}
    hosts = [str(h) for h in spec.get("hosts") or ()]
    if not hosts:
        raise RoutingError(
            f"VirtualService {_short_name(virtual_service)!r} has no hosts; it needs its "
            "endpoint's name as the first host"
        )
    routes: list[dict[str, Any]] = []
    for i, http in enumerate(spec.get("http") or ()):
        where = f"VirtualService http[{i}] ({http.get('name') or 'unnamed'})"
        unknown = sorted(set(http) - _ROUTE_KEYS)
        if unknown:
            raise RoutingError(
                f"{where} uses {', '.join(unknown)}, which the local router does not support; "
                "remove it or use a cluster target"
            )
        action = _route_action(where, http, hosts)
        for j, block in enumerate(http.get("match") or [{}]):
            route: dict[str, Any] = {
                "match": _route_match(f"{where}.match[{j}]", block),
                "route": action,
            }
            if http.get("name"):
                route["name"] = str(http["name"])
            routes.append(route)
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": [{"name": hosts[0], "domains": ["*"], "routes": routes}],
    }


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
