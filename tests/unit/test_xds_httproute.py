"""The HTTPRoute reader: the same state read from either routing gives the same Envoy routes."""

from __future__ import annotations

import copy

import pytest

from mlshift._exceptions import RoutingError
from mlshift._render import render_virtual_service
from mlshift._render_gateway import render_http_route
from mlshift._state import (
    EndpointState,
    HeaderRoute,
    Mirror,
    RoutePolicy,
    TrafficState,
    VersionSpec,
)
from mlshift.local._httproute import read_http_route
from mlshift.local._xds import envoy_routes, route_configuration


def _state(traffic: TrafficState) -> EndpointState:
    state = EndpointState("churn", namespace="local", routing="gateway-api")
    for version in ("v1", "v2", "v3"):
        state = state.with_version(VersionSpec(version))
    return state.with_traffic(traffic)


@pytest.mark.parametrize(
    "traffic",
    [
        TrafficState({"v1": 90, "v2": 10, "v3": 0}),
        TrafficState(
            {"v1": 60, "v2": 30, "v3": 10},
            headers=(
                HeaderRoute("v3", "X-Canary", "yes"),
                HeaderRoute("v2", "X-Team", "risk", "prefix"),
                HeaderRoute("v2", "X-Id", "[0-9]+", "regex"),
            ),
            mirror=Mirror("v3", 25.0),
        ),
        TrafficState({"v1": 100, "v2": 0, "v3": 0}, mirror=Mirror("v2", 12.5)),
    ],
    ids=["90-10", "headers-and-mirror", "fractional-mirror"],
)
def test_both_routings_give_envoy_the_same_routes(traffic: TrafficState) -> None:
    state = _state(traffic)
    from_vs = route_configuration(render_virtual_service(state))
    from_route = envoy_routes(read_http_route(render_http_route(state), "churn"))
    # The one documented difference: a prefix header rule is a regex in the HTTPRoute form.
    for config in (from_vs, from_route):
        for route in config["virtual_hosts"][0]["routes"]:
            for header in route["match"].get("headers", ()):
                if "prefix" in header["string_match"]:
                    prefix = header["string_match"].pop("prefix")
                    header["string_match"]["safe_regex"] = {"regex": f"{prefix}.*"}
    assert from_route == from_vs


def test_rules_are_ordered_by_gateway_api_precedence_not_list_order() -> None:
    state = _state(TrafficState({"v1": 100}, headers=(HeaderRoute("v2", "X-Canary", "yes"),)))
    route = render_http_route(state)
    route["spec"]["rules"].reverse()  # the split first: it must still match last
    names = [r.name for r in read_http_route(route, "churn").routes]
    assert names[-1] == "mlshift"
    assert names[-2] == "mlshift-header-0"
    assert set(names[:3]) == {"mlshift-version-v1", "mlshift-version-v2", "mlshift-version-v3"}


def test_no_retries_field_means_the_mesh_default() -> None:
    route = read_http_route(render_http_route(_state(TrafficState({"v1": 100}))), "churn")
    defaults = RoutePolicy()
    assert route.routes[-1].retries == {"attempts": defaults.attempts, "retryOn": defaults.retry_on}


def test_what_the_local_router_cannot_do_is_refused() -> None:
    base = render_http_route(_state(TrafficState({"v1": 100})))
    other = copy.deepcopy(base)
    other["spec"]["rules"][-1]["backendRefs"][0]["name"] = "fraud-v1"
    with pytest.raises(RoutingError, match="only serves the version Services churn-<version>"):
        read_http_route(other, "churn")
    query = copy.deepcopy(base)
    query["spec"]["rules"][-1]["matches"] = [{"queryParams": [{"name": "a", "value": "b"}]}]
    with pytest.raises(RoutingError, match="queryParams"):
        read_http_route(query, "churn")
    rewrite = copy.deepcopy(base)
    rewrite["spec"]["rules"][-1]["filters"] = [{"type": "URLRewrite", "urlRewrite": {}}]
    with pytest.raises(RoutingError, match="RequestMirror only"):
        read_http_route(rewrite, "churn")


def test_a_path_prefix_matches_whole_path_elements() -> None:
    route = render_http_route(_state(TrafficState({"v1": 100})))
    route["spec"]["rules"][-1]["matches"] = [{"path": {"type": "PathPrefix", "value": "/v2/"}}]
    (match,) = read_http_route(route, "churn").routes[-1].matches
    assert match.path == ("regex", "/v2(/.*)?")
