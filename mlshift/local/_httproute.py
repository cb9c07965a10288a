"""The Gateway API reader: an HTTPRoute in, the router's internal route model out. Pure.

The second reader beside ``_xds.read_virtual_service``: both produce ``_xds.RouteTable``, which
``_xds.envoy_routes`` turns into Envoy configuration, so an endpoint routed by an HTTPRoute
behaves locally as one routed by a VirtualService.

What it takes from the HTTPRoute, as Istio does for in-mesh (GAMMA) routes:

- each match of each rule becomes one route (matches are ORed; a rule with none matches every
  path), ordered the Gateway API way as Istio implements it: exact path, then regular
  expression, then prefix, longer paths first, then routes with a method, then those with
  more header matches; ties keep the HTTPRoute's order;
- ``backendRefs`` to the version Services ``<endpoint>-<version>`` with their weights
  (default 1); a ``RequestMirror`` filter with ``percent`` or ``fraction``;
- ``timeouts.request``. The standard channel has no retries: the mesh default applies
  (``RoutePolicy``'s, as on a VirtualService route written by mlshift).

Anything else (query parameter matches, other filters, backends that are not a version's
Service) raises ``RoutingError`` naming the field, before Envoy sees a thing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlshift._durations import parse_duration
from mlshift._exceptions import RoutingError
from mlshift._render_gateway import version_of_backend
from mlshift._state import RoutePolicy
from mlshift.local._xds import Match, Route, RouteTable

__all__ = ["read_http_route"]

_PATH_KINDS = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}
_HEADER_KINDS = {"Exact": "exact", "RegularExpression": "regex"}
_RULE_KEYS = {"name", "matches", "backendRefs", "filters", "timeouts"}
_MATCH_KEYS = {"path", "headers", "method"}
_RANK = {"exact": 3, "regex": 2, "prefix": 1}


def _path(where: str, spec: Mapping[str, Any]) -> tuple[str, str]:
    kind = _PATH_KINDS.get(str(spec.get("type") or "PathPrefix"))
    value = str(spec.get("value") or "/")
    if kind is None:
        raise RoutingError(f"{where}.path.type {spec.get('type')!r} is not Exact, PathPrefix or RE")
    if kind == "prefix" and value.rstrip("/"):
        # A Gateway API prefix matches whole path elements: /a matches /a and /a/b, not /ab.
        return "regex", f"{re.escape(value.rstrip('/'))}(/.*)?"
    return kind, value


def _match(where: str, block: Mapping[str, Any]) -> Match:
    unknown = sorted(set(block) - _MATCH_KEYS)
    if unknown:
        raise RoutingError(
            f"{where} uses {', '.join(unknown)}, which the local router does not support; "
            "match on path, headers or method"
        )
    headers = []
    for i, header in enumerate(block.get("headers") or ()):
        kind = _HEADER_KINDS.get(str(header.get("type") or "Exact"))
        if kind is None:
            raise RoutingError(f"{where}.headers[{i}].type must be Exact or RegularExpression")
        headers.append((str(header["name"]).lower(), kind, str(header["value"])))
    method = block.get("method")
    return Match(
        path=_path(where, block.get("path") or {}),
        headers=tuple(headers),
        method=("exact", str(method)) if method else None,
    )


def _version(where: str, ref: Mapping[str, Any], endpoint: str) -> str:
    name = str(ref.get("name") or "")
    version = version_of_backend(endpoint, name)
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service" or not version:
        raise RoutingError(
            f"{where} sends traffic to {ref.get('kind', 'Service')} {name!r}; the local router"
            f" only serves the version Services {endpoint}-<version>"
        )
    return version


def _mirror(where: str, filters: Any, endpoint: str) -> tuple[str, float] | None:
    mirror = None
    for i, item in enumerate(filters or ()):
        if item.get("type") != "RequestMirror":
            raise RoutingError(
                f"{where}.filters[{i}] is {item.get('type')!r}; the local router supports"
                " RequestMirror only"
            )
        spec = item.get("requestMirror") or {}
        fraction = spec.get("fraction")
        if fraction:
            percent = 100.0 * fraction["numerator"] / fraction.get("denominator", 100)
        else:
            percent = float(spec.get("percent", 100))
        version = _version(
            f"{where}.filters[{i}].requestMirror.backendRef", spec.get("backendRef") or {}, endpoint
        )
        mirror = (version, percent)
    return mirror


def _timeout(where: str, timeouts: Mapping[str, Any] | None) -> str:
    if not timeouts or not timeouts.get("request"):
        return "0s"
    try:
        seconds = parse_duration(str(timeouts["request"]), what="timeouts.request")
    except ValueError as exc:
        raise RoutingError(f"{exc}; fix {where}.timeouts.request") from exc
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _precedence(route: Route) -> tuple[int, int, int, int]:
    match = route.matches[0]
    kind, value = match.path or ("prefix", "/")
    return (-_RANK[kind], -len(value), 0 if match.method else 1, -len(match.headers))


def read_http_route(http_route: Mapping[str, Any], endpoint: str) -> RouteTable:
    """Read an HTTPRoute's rules into the internal model, in the Gateway API's precedence.

    Raises:
        RoutingError: a rule uses something the local router cannot do, or sends traffic
            to something that is not one of the endpoint's version Services.

    Example:
        >>> route = {"spec": {"rules": [{"name": "mlshift", "backendRefs": [
        ...     {"name": "churn-v1", "port": 80, "weight": 100}]}]}}
        >>> read_http_route(route, "churn").routes[0].backends
        (('v1', 100),)
    """
    defaults = RoutePolicy()
    retries = {"attempts": defaults.attempts, "retryOn": defaults.retry_on}
    routes: list[Route] = []
    for i, rule in enumerate((http_route.get("spec") or {}).get("rules") or ()):
        where = f"HTTPRoute rules[{i}] ({rule.get('name') or 'unnamed'})"
        unknown = sorted(set(rule) - _RULE_KEYS)
        if unknown:
            raise RoutingError(
                f"{where} uses {', '.join(unknown)}, which the local router does not support"
            )
        refs = list(rule.get("backendRefs") or ())
        if not refs:
            raise RoutingError(f"{where} has no backendRefs; give it at least one version")
        backends = []
        for j, ref in enumerate(refs):
            weight = ref.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise RoutingError(f"{where}.backendRefs[{j}] weight must be a whole number >= 0")
            backends.append((_version(f"{where}.backendRefs[{j}]", ref, endpoint), weight))
        mirror = _mirror(where, rule.get("filters"), endpoint)
        timeout = _timeout(where, rule.get("timeouts"))
        for j, block in enumerate(rule.get("matches") or [{}]):
            routes.append(
                Route(
                    name=str(rule.get("name") or ""),
                    matches=(_match(f"{where}.matches[{j}]", block),),
                    backends=tuple(backends),
                    mirror=mirror,
                    timeout=timeout,
                    retries=retries,
                    where=where,
                )
            )
    routes.sort(key=_precedence)  # stable: ties keep the route's order
    return RouteTable(endpoint, tuple(routes))
