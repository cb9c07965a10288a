"""The Gateway API renderer: the same state as the VirtualService, as an HTTPRoute.

Every HTTPRoute here is checked against the Gateway API's own CRD (v1.4.1, standard channel):
its openAPIV3Schema and its CEL rules (``tests/fixtures/gateway_api.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlshift._exceptions import RoutingError
from mlshift._render import render
from mlshift._render_gateway import (
    GatewayManifests,
    backends_of,
    render_any,
    render_gateway,
    render_waypoint,
)
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState, VersionSpec
from tests.fixtures.gateway_api import EVALUATED, UNEVALUATED, all_rules, validate_http_route


def _state(routing: str = "gateway-api", **kwargs: Any) -> EndpointState:
    state = EndpointState("churn", namespace="ml", routing=routing, **kwargs)  # type: ignore[arg-type]
    state = state.with_version(VersionSpec("v1")).with_version(VersionSpec("v2"))
    return state.with_traffic(
        TrafficState(
            {"v1": 90, "v2": 10},
            headers=(HeaderRoute("v2", "X-Canary", "yes"),),
            mirror=Mirror("v2", 25.0),
        )
    )


def _vs_form(state: EndpointState) -> dict[str, Any]:
    routes = render(state).virtual_service["spec"]["http"]
    main = routes[-1]
    header = next(r for r in routes if r["name"].startswith("mlshift-header-"))
    ((name, spec),) = header["match"][0]["headers"].items()
    return {
        "weights": {d["destination"]["subset"]: d["weight"] for d in main["route"]},
        "header": (name, spec["exact"], header["route"][0]["destination"]["subset"]),
        "mirror": (main["mirror"]["subset"], main["mirrorPercentage"]["value"]),
        "pinned": [r["match"][0]["uri"]["regex"] for r in routes if "-version-" in r["name"]],
    }


def _route_form(route: dict[str, Any]) -> dict[str, Any]:
    rules = route["spec"]["rules"]
    main = rules[-1]
    header = next(r for r in rules if r["name"].startswith("mlshift-header-"))
    match = header["matches"][0]["headers"][0]
    mirror = main["filters"][0]["requestMirror"]
    return {
        "weights": {b["name"].removeprefix("churn-"): b["weight"] for b in main["backendRefs"]},
        "header": (match["name"], match["value"], header["backendRefs"][0]["name"][6:]),
        "mirror": (mirror["backendRef"]["name"][6:], float(mirror["percent"])),
        "pinned": [r["matches"][0]["path"]["value"] for r in rules if "-version-" in r["name"]],
    }


def test_two_versions_at_90_10_match_the_virtual_service_form_and_the_crd() -> None:
    state = _state()
    manifests = render_any(state)
    assert isinstance(manifests, GatewayManifests)
    assert validate_http_route(manifests.http_route) == []
    assert _route_form(manifests.http_route) == _vs_form(state)
    assert [r["name"] for r in manifests.http_route["spec"]["rules"]] == [
        "mlshift-version-v1",
        "mlshift-version-v2",
        "mlshift-header-0",
        "mlshift",
    ]
    # Gateway API has no subsets: a Service per version selects that version's pods.
    assert {n: s["spec"]["selector"] for n, s in manifests.version_services.items()} == {
        "v1": {"app": "churn", "version": "v1"},
        "v2": {"app": "churn", "version": "v2"},
    }
    kinds = [(o["kind"], o["metadata"]["name"]) for o in manifests.all()]
    assert kinds == [
        ("Deployment", "churn-v1"),
        ("Deployment", "churn-v2"),
        ("Service", "churn-v1"),
        ("Service", "churn-v2"),
        ("Service", "churn"),
        ("HTTPRoute", "churn"),
    ]
    assert backends_of(manifests.http_route, "churn") == {"v1", "v2"}


def test_in_mesh_route_attaches_to_the_service_and_ingress_to_the_gateways() -> None:
    mesh = render_gateway(_state()).http_route["spec"]
    assert mesh["parentRefs"] == [{"group": "", "kind": "Service", "name": "churn", "port": 80}]
    assert "hostnames" not in mesh
    ingress = render_gateway(
        _state(gateways=("istio-ingress/public", "mesh"), hosts=("churn.example.com",))
    ).http_route
    assert validate_http_route(ingress) == []
    assert ingress["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "istio-ingress",
        },
        {"group": "", "kind": "Service", "name": "churn", "port": 80},
    ]
    assert ingress["spec"]["hostnames"] == ["churn.example.com"]


@pytest.mark.parametrize(
    ("rule", "kind", "value"),
    [
        (HeaderRoute("v2", "X-Canary", "yes"), "Exact", "yes"),
        (HeaderRoute("v2", "X-Team", "risk.", "prefix"), "RegularExpression", r"risk\..*"),
        (HeaderRoute("v2", "X-Team", "r[0-9]+", "regex"), "RegularExpression", "r[0-9]+"),
    ],
)
def test_header_rules_become_header_matches(rule: HeaderRoute, kind: str, value: str) -> None:
    state = _state().with_traffic(TrafficState({"v1": 100, "v2": 0}, headers=(rule,)))
    route = render_gateway(state).http_route
    assert validate_http_route(route) == []
    header = route["spec"]["rules"][2]["matches"][0]["headers"][0]
    assert header == {"type": kind, "name": rule.header.lower(), "value": value}


def test_a_fractional_mirror_percent_is_a_fraction() -> None:
    state = _state().with_traffic(TrafficState({"v1": 100, "v2": 0}, mirror=Mirror("v2", 12.5)))
    route = render_gateway(state).http_route
    assert validate_http_route(route) == []
    mirror = route["spec"]["rules"][-1]["filters"][0]["requestMirror"]
    assert mirror["fraction"] == {"numerator": 125000, "denominator": 1000000}
    assert "percent" not in mirror


def test_the_validator_rejects_what_the_api_server_would() -> None:
    route = render_gateway(_state()).http_route
    both = copy.deepcopy(route)
    both["spec"]["rules"][-1]["filters"][0]["requestMirror"]["fraction"] = {"numerator": 1}
    assert any("percent or fraction" in p for p in validate_http_route(both))
    no_port = copy.deepcopy(route)
    del no_port["spec"]["rules"][0]["backendRefs"][0]["port"]
    assert any("Must have port" in p for p in validate_http_route(no_port))
    bad_weight = copy.deepcopy(route)
    bad_weight["spec"]["rules"][-1]["backendRefs"][0]["weight"] = -1
    assert validate_http_route(bad_weight)
    twice = copy.deepcopy(route)
    twice["spec"]["parentRefs"] *= 2
    assert validate_http_route(twice)


def test_every_cel_rule_met_was_evaluated() -> None:
    test_the_validator_rejects_what_the_api_server_would()
    test_two_versions_at_90_10_match_the_virtual_service_form_and_the_crd()
    assert UNEVALUATED == {}
    assert any("parentRefs" in key for key in EVALUATED)
    assert any("requestMirror" in key for key in EVALUATED)


def test_too_many_rules_for_one_route_is_a_routing_error() -> None:
    state = EndpointState("churn", routing="gateway-api")
    for i in range(16):
        state = state.with_version(VersionSpec(f"v{i}"))
    with pytest.raises(RoutingError, match="holds 16"):
        render_gateway(state)


def test_waypoint_gateway_for_ambient() -> None:
    gateway = render_waypoint("ml")
    assert gateway["kind"] == "Gateway"
    assert gateway["spec"]["listeners"] == [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]


def test_routing_survives_the_json_round_trip() -> None:
    state = _state()
    assert EndpointState.from_json(state.to_json()) == state
    assert EndpointState.from_json({"name": "churn"}).routing == "istio"
    with pytest.raises(ValueError, match="routing must be one of"):
        EndpointState("churn", routing="linkerd")  # type: ignore[arg-type]


def _every_rule_route() -> dict[str, Any]:
    """An HTTPRoute that reaches every CEL rule of the CRD (filters mlshift never writes too)."""
    svc = {"name": "b", "port": 80}
    header = [{"name": "a", "value": "b"}]
    mirror = {"backendRef": svc, "fraction": {"numerator": 1, "denominator": 2}}
    prefix = {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/x"}
    full = {"type": "ReplaceFullPath", "replaceFullPath": "/x"}
    filters = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": header}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": header}},
        {"type": "URLRewrite", "urlRewrite": {"path": prefix}},
        {"type": "RequestMirror", "requestMirror": mirror},
        {"type": "ExtensionRef", "extensionRef": {"group": "a", "kind": "B", "name": "c"}},
    ]
    redirect = [{"type": "RequestRedirect", "requestRedirect": {"path": full}}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "x"},
        "spec": {
            "parentRefs": [
                {"name": "gw", "namespace": "ns", "sectionName": "http"},
                {"group": "", "kind": "Service", "name": "s", "port": 80},
            ],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
                    "filters": filters,
                    "backendRefs": [{**svc, "filters": filters}],
                    "timeouts": {"request": "10s", "backendRequest": "5s"},
                },
                {"matches": [{"path": {"type": "Exact", "value": "/r"}}], "filters": redirect},
                {"backendRefs": [{**svc, "filters": redirect}]},
            ],
        },
    }


def test_the_cel_library_evaluates_every_rule_of_the_crd() -> None:
    route = _every_rule_route()
    assert validate_http_route(route) == []
    assert len(EVALUATED) == len(all_rules()) == 77
    assert UNEVALUATED == {}
    slow = copy.deepcopy(route)
    slow["spec"]["rules"][0]["timeouts"] = {"request": "5s", "backendRequest": "10s"}
    assert any("backendRequest" in p for p in validate_http_route(slow))
    both = copy.deepcopy(route)
    both["spec"]["rules"][1]["filters"].append(route["spec"]["rules"][0]["filters"][2])
    assert validate_http_route(both)
