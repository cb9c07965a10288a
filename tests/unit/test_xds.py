"""The VirtualService/DestinationRule -> Envoy translator (mlshift.local._xds) and Envoy's
bootstrap (mlshift.local._envoy_bootstrap), pure.

Covers: one health-checked loopback cluster per subset; the weighted route, header routes
(exact/prefix/regex) ahead of it, mirror with its fraction, retries (Istio names, status codes,
per-try timeout) and timeout; foreign routes kept in order; refusals for what the local router
cannot do; the bootstrap (loopback only, 1 s stats flush, finer latency buckets, watched files).
"""

from __future__ import annotations

from typing import Any

import pytest

from mlshift._exceptions import RoutingError
from mlshift._render import merge_routes, render
from mlshift._state import EndpointState, HeaderRoute, Mirror, RoutePolicy, TrafficState
from mlshift._state import VersionSpec as V
from mlshift.local import _xds as xds
from mlshift.local._envoy_bootstrap import bootstrap


def _state(**traffic: Any) -> EndpointState:
    state = EndpointState("churn").with_version(V("v1")).with_version(V("v2"))
    return state.with_traffic(TrafficState(**traffic))


def _all_routes(state: EndpointState) -> list[dict[str, Any]]:
    config = xds.route_configuration(render(state).virtual_service)
    assert config["name"] == "mlshift"
    (host,) = config["virtual_hosts"]
    assert host["domains"] == ["*"]
    return list(host["routes"])


def _routes(state: EndpointState) -> list[dict[str, Any]]:
    """The routes after the version-pinned ones (test_version_pinned_paths_come_first)."""
    return [r for r in _all_routes(state) if not r["name"].startswith("mlshift-version-")]


def test_version_pinned_paths_come_first() -> None:
    routes = _all_routes(
        _state(weights={"v1": 0, "v2": 100}, headers=(HeaderRoute("v2", "x", "1"),))
    )
    assert [r["name"] for r in routes] == [
        "mlshift-version-v1",
        "mlshift-version-v2",
        "mlshift-header-0",
        "mlshift",
    ]
    assert routes[0]["match"] == {"safe_regex": {"regex": "/v2/models/[^/]+/versions/v1(/.*)?"}}
    assert routes[0]["route"]["cluster"] == "churn_v1"  # whatever the weights say


def test_one_health_checked_loopback_cluster_per_subset() -> None:
    dr = render(_state(weights={"v1": 100, "v2": 0})).destination_rule
    clusters = xds.clusters(dr, {"v1": 9001, "v2": 9002})
    assert [c["name"] for c in clusters] == ["churn_v1", "churn_v2"]
    v2 = clusters[1]
    assert v2["type"] == "STATIC"
    endpoint = v2["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9002}
    (check,) = v2["health_checks"]
    assert check["http_health_check"] == {"path": "/v2/health/ready"}
    assert check["interval"] == check["no_traffic_interval"] == "0.5s"
    # Sized for a busy server: a slow answer is not a dead version (issue 12).
    assert (check["timeout"], check["unhealthy_threshold"]) == ("2.5s", 3)
    # One host per cluster: with Envoy's default 50 % panic threshold a failing host would
    # still get traffic.
    assert v2["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}}


def test_subset_without_a_server_is_refused() -> None:
    dr = render(_state(weights={"v1": 100, "v2": 0})).destination_rule
    with pytest.raises(RoutingError, match="'v2'.*no local server"):
        xds.clusters(dr, {"v1": 9001})


def test_weighted_route_with_timeout_and_retries() -> None:
    (route,) = _routes(_state(weights={"v1": 90, "v2": 10}))
    assert route["name"] == "mlshift"
    assert route["match"] == {"prefix": "/"}
    action = route["route"]
    assert action["weighted_clusters"] == {
        "clusters": [{"name": "churn_v1", "weight": 90}, {"name": "churn_v2", "weight": 10}]
    }
    assert action["timeout"] == "30s"
    assert action["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retriable_status_codes": [503],
    }
    assert "request_mirror_policies" not in action


def test_single_destination_routes_to_its_cluster() -> None:
    state = EndpointState("churn").with_version(V("v1"))
    (route,) = _routes(state)
    assert route["route"]["cluster"] == "churn_v1"


def test_header_rules_come_first_with_envoy_matchers() -> None:
    rules = (
        HeaderRoute("v2", "X-Canary", "yes"),
        HeaderRoute("v2", "x-user", "beta-", "prefix"),
        HeaderRoute("v1", "x-region", "eu-.*", "regex"),
    )
    routes = _routes(_state(weights={"v1": 100, "v2": 0}, headers=rules))
    assert [r["name"] for r in routes] == [
        "mlshift-header-0",
        "mlshift-header-1",
        "mlshift-header-2",
        "mlshift",
    ]
    matchers = [r["match"]["headers"][0] for r in routes[:3]]
    assert matchers == [
        {"name": "x-canary", "string_match": {"exact": "yes"}},
        {"name": "x-user", "string_match": {"prefix": "beta-"}},
        {"name": "x-region", "string_match": {"safe_regex": {"regex": "eu-.*"}}},
    ]
    assert routes[0]["route"]["cluster"] == "churn_v2"


def test_mirror_becomes_a_runtime_fraction() -> None:
    (route,) = _routes(_state(weights={"v1": 100, "v2": 0}, mirror=Mirror("v2", 12.5)))
    assert route["route"]["request_mirror_policies"] == [
        {
            "cluster": "churn_v2",
            "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
        }
    ]


def test_policy_per_try_timeout_and_status_codes() -> None:
    state = _state(weights={"v1": 100, "v2": 0})
    state = EndpointState(
        "churn",
        versions=state.versions,
        traffic=state.traffic,
        policy=RoutePolicy(timeout_s=2.5, attempts=3, per_try_timeout_s=0.5, retry_on="5xx,503"),
    )
    action = _routes(state)[0]["route"]
    assert action["timeout"] == "2.5s"
    assert action["retry_policy"] == {
        "retry_on": "5xx,retriable-status-codes",
        "num_retries": 3,
        "retriable_status_codes": [503],
        "per_try_timeout": "0.5s",
    }


def test_no_attempts_means_no_retry_policy() -> None:
    assert xds.retry_policy({"attempts": 0, "retryOn": "5xx"}) is None
    with pytest.raises(RoutingError, match="retryOn 'sometimes'"):
        xds.retry_policy({"attempts": 1, "retryOn": "sometimes"})


def test_foreign_routes_are_translated_in_place() -> None:
    state = _state(weights={"v1": 50, "v2": 50})
    vs = render(state).virtual_service
    admin = {
        "name": "admin",
        "match": [{"uri": {"prefix": "/admin"}}, {"method": {"exact": "DELETE"}}],
        "route": [{"destination": {"host": "churn", "subset": "v1"}}],
    }
    vs["spec"]["http"] = merge_routes([admin], vs["spec"]["http"])
    routes = xds.route_configuration(vs)["virtual_hosts"][0]["routes"]
    names = [r["name"] for r in routes]
    assert names == ["admin", "admin", "mlshift-version-v1", "mlshift-version-v2", "mlshift"]
    assert routes[0]["match"] == {"prefix": "/admin"}
    assert routes[1]["match"]["headers"] == [
        {"name": ":method", "string_match": {"exact": "DELETE"}}
    ]
    assert routes[0]["route"]["timeout"] == "0s"  # Istio: no timeout unless one is set
    assert "retry_policy" not in routes[0]["route"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fault": {"abort": {"httpStatus": 500}}}, "fault"),
        ({"route": [{"destination": {"host": "other", "subset": "v1"}}]}, "host 'other'"),
        ({"route": [{"destination": {"host": "churn"}}]}, "names no subset"),
        ({"route": []}, "no destinations"),
        ({"match": [{"queryParams": {"a": {"exact": "1"}}}]}, "queryParams"),
        ({"match": [{"headers": {"x": {"exact": "1", "prefix": "2"}}}]}, "exactly one"),
        (
            {"mirror": {"host": "churn", "subset": "v2"}, "mirrorPercentage": {"value": 150}},
            "0-100",
        ),
    ],
)
def test_what_the_local_router_cannot_do_is_refused(change: dict[str, Any], message: str) -> None:
    vs = render(_state(weights={"v1": 100, "v2": 0})).virtual_service
    vs["spec"]["http"][0].update(change)
    with pytest.raises(RoutingError, match=message):
        xds.route_configuration(vs)


def test_subsets_of_lists_destinations_and_mirror() -> None:
    vs = render(_state(weights={"v1": 100, "v2": 0}, mirror=Mirror("v2"))).virtual_service
    assert xds.subsets_of(vs) == {"v1", "v2"}


def test_bootstrap_listens_on_loopback_with_watched_files() -> None:
    boot = bootstrap(router_port=8123, cds_path="/s/cds/cds.json", rds_path="/s/rds/rds.json")
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8123}
    assert boot["stats_flush_interval"] == "1s"
    (buckets,) = boot["stats_config"]["histogram_bucket_settings"]
    assert buckets["match"] == {"suffix": "upstream_rq_time"}
    assert buckets["buckets"][:3] == [0.5, 1, 2]
    cds = boot["dynamic_resources"]["cds_config"]["path_config_source"]
    assert cds == {"path": "/s/cds/cds.json", "watched_directory": {"path": "/s/cds"}}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    rds = manager["rds"]["config_source"]["path_config_source"]
    assert rds == {"path": "/s/rds/rds.json", "watched_directory": {"path": "/s/rds"}}


def test_discovery_response_wraps_resources() -> None:
    cluster = {"@type": xds.CLUSTER_TYPE, "name": "churn_v1"}
    assert xds.discovery_response([cluster], "42") == {"version_info": "42", "resources": [cluster]}
