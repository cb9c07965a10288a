"""The pure core: names, durations, weights, desired state, renderer and planner."""

from __future__ import annotations

import random
import re

import pytest

from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidNameError, InvalidWeightsError
from mlshift._names import check_name
from mlshift._plan import plan_change, plan_delete
from mlshift._render import merge_routes, render
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState, VersionSpec
from mlshift._weights import rest_pro_rata, validate_weights


@pytest.mark.parametrize("name", ["churn", "v2", "a-b-1", "x" * 63])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("Churn", "'churn'"), ("v_2", "'v-2'"), ("-a", "DNS-1123"), ("", "empty"), ("x" * 64, "64")],
)
def test_bad_names_say_what_to_use(name: str, fragment: str) -> None:
    with pytest.raises(InvalidNameError, match=fragment):
        check_name(name, kind="version")


def test_name_must_be_a_string() -> None:
    with pytest.raises(InvalidNameError, match="int"):
        check_name(3)


@pytest.mark.parametrize(
    ("name", "kind", "suggestion"),
    [
        ("V 2", "version", "v-2"),
        ("Churn_Model.v2", "version", "churn-model-v2"),
        ("  my__model!! ", "version", "my-model"),
        ("-a-", "version", "a"),
        ("ümlaut", "version", "mlaut"),
        ("x" * 62 + "_y", "version", "x" * 62),
        ("y" * 70, "version", "y" * 63),
        ("2 Churn", "endpoint name", "ep-2-churn"),
        ("2churn", "endpoint name", "ep-2churn"),
        ("Churn", "endpoint name", "churn"),
        ("!!!", "version", "churn-v2"),
    ],
)
def test_the_suggested_name_is_itself_valid(name: str, kind: str, suggestion: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        check_name(name, kind=kind)
    assert f"(for example {suggestion!r})" in str(info.value)
    assert check_name(suggestion, kind=kind) == suggestion


def _refusal(name: str, kind: str) -> str:
    """The message check_name refuses ``name`` with, or "" when it takes it."""
    try:
        check_name(name, kind=kind)
    except InvalidNameError as exc:
        return str(exc)
    return ""


def test_random_names_get_valid_suggestions() -> None:
    rng = random.Random(1123)
    alphabet = "abcXYZ019-_. \tü!/"
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 70)))
        for kind in ("version", "endpoint name"):
            message = _refusal(name, kind)
            if message:
                suggestion = re.search(r"\(for example '(.*)'\)$", message)
                assert suggestion, message
                assert check_name(suggestion.group(1), kind=kind)


@pytest.mark.parametrize("kind", ["version", "endpoint name"])
def test_a_trailing_newline_is_refused(kind: str) -> None:
    with pytest.raises(InvalidNameError, match="'v2'"):
        check_name("v2\n", kind=kind)


def test_endpoint_names_start_with_a_letter() -> None:
    assert check_name("2churn", kind="version") == "2churn"
    with pytest.raises(InvalidNameError, match="DNS-1035"):
        check_name("2churn", kind="endpoint name")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "m5", -3, True])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)  # type: ignore[arg-type]


def test_weights_fill_missing_versions_with_zero() -> None:
    assert validate_weights({"v1": 100}, versions=["v1", "v2"]) == {"v1": 100, "v2": 0}


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        ({"v1": 90, "v2": 20}, "sum to 110"),
        ({"v1": 90, "v3": 10}, "unknown version.*'v3'"),
        ({"v1": 100.5}, "whole number"),
        ({"v1": -10, "v2": 110}, "0-100"),
        ({"v1": "90", "v2": 10}, "integer"),
        ({}, "non-empty"),
    ],
)
def test_bad_weights_name_the_problem(weights: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidWeightsError, match=fragment):
        validate_weights(weights, versions=["v1", "v2"])


def test_weight_on_a_version_that_is_not_ready_is_refused() -> None:
    with pytest.raises(InvalidWeightsError, match="'v2' are not ready"):
        validate_weights({"v1": 50, "v2": 50}, versions=["v1", "v2"], ready=["v1"])
    assert validate_weights({"v1": 100, "v2": 0}, versions=["v1", "v2"], ready=["v1"])


def test_pro_rata_keeps_the_others_ratio_and_sums_to_100() -> None:
    assert rest_pro_rata({"v1": 60, "v2": 30, "v3": 10}, "v3", 40) == {"v1": 40, "v2": 20, "v3": 40}
    out = rest_pro_rata({"v1": 1, "v2": 1, "v3": 1, "v4": 97}, "v4", 0)
    assert sum(out.values()) == 100
    assert sorted(out.values()) == [0, 33, 33, 34]
    assert rest_pro_rata({"v1": 100, "v2": 0, "v3": 0}, "v1", 50) == {"v1": 50, "v2": 25, "v3": 25}


def test_pro_rata_refuses_the_only_version_below_100() -> None:
    with pytest.raises(InvalidWeightsError, match="only version"):
        rest_pro_rata({"v1": 100}, "v1", 50)


def _canary() -> EndpointState:
    state = EndpointState("churn", "ml").with_version(VersionSpec("v1", image="r/c@sha256:1"))
    state = state.with_version(VersionSpec("v2", image="r/c@sha256:2"))
    return state.with_traffic(
        TrafficState(
            {"v1": 90, "v2": 10},
            headers=(HeaderRoute("v2", "X-Canary", "yes"),),
            mirror=Mirror("v2", 5.0),
        )
    )


def test_first_version_takes_everything_and_later_ones_start_at_zero() -> None:
    one = EndpointState("churn").with_version(VersionSpec("v1"))
    two = one.with_version(VersionSpec("v2"))
    assert dict(one.traffic.weights) == {"v1": 100}
    assert dict(two.traffic.weights) == {"v1": 100, "v2": 0}


def test_state_round_trips_through_json() -> None:
    state = _canary()
    assert EndpointState.from_json(state.to_json()) == state


def test_render_follows_the_design_contract() -> None:
    m = render(_canary())
    dep = m.deployments["v2"]
    assert dep["metadata"]["name"] == "churn-v2"
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlshift"
    assert dep["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "r/c@sha256:2"
    port = m.service["spec"]["ports"][0]
    assert (port["port"], port["name"], port["targetPort"]) == (80, "http", 8080)
    assert [s["name"] for s in m.destination_rule["spec"]["subsets"]] == ["v1", "v2"]
    http = m.virtual_service["spec"]["http"]
    assert [r["name"] for r in http] == [
        "mlshift-version-v1",
        "mlshift-version-v2",
        "mlshift-header-0",
        "mlshift",
    ]
    assert http[0]["match"] == [{"uri": {"regex": "/v2/models/[^/]+/versions/v1(/.*)?"}}]
    assert http[2]["match"] == [{"headers": {"x-canary": {"exact": "yes"}}}]
    assert [(d["destination"]["subset"], d["weight"]) for d in http[3]["route"]] == [
        ("v1", 90),
        ("v2", 10),
    ]
    assert http[3]["mirrorPercentage"] == {"value": 5.0}
    assert m.virtual_service["spec"]["hosts"] == ["churn"]
    assert "kind: VirtualService" in m.to_yaml()


def test_merge_keeps_foreign_routes_in_place() -> None:
    live = [{"name": "admin", "match": [{"uri": {"prefix": "/admin"}}]}, {"name": "mlshift"}]
    live.append({"name": "fallback"})
    merged = merge_routes(live, [{"name": "mlshift-header-0"}, {"name": "mlshift", "v": 2}])
    assert [r["name"] for r in merged] == ["admin", "mlshift-header-0", "mlshift", "fallback"]
    assert merge_routes(None, [{"name": "mlshift"}]) == [{"name": "mlshift"}]


def _steps(plan: object) -> list[str]:
    return [f"{s.action} {s.kind}" for s in plan.steps]  # type: ignore[attr-defined]


def test_adding_a_version_orders_deployment_then_subset_then_routes() -> None:
    one = EndpointState("churn").with_version(VersionSpec("v1"))
    two = one.with_version(VersionSpec("v2"))
    assert _steps(plan_change(one, two)) == [
        "apply Deployment",
        "wait-ready Deployment",
        "apply DestinationRule",
        "patch-routes VirtualService",
    ]


def test_removing_a_version_orders_routes_then_subset_then_deployment() -> None:
    two = EndpointState("churn").with_version(VersionSpec("v1")).with_version(VersionSpec("v2"))
    two = two.with_traffic(TrafficState({"v1": 0, "v2": 100}))
    plan = plan_change(two, two.without_version("v1"))
    assert _steps(plan) == [
        "patch-routes VirtualService",
        "apply DestinationRule",
        "delete Deployment",
    ]
    assert [s["name"] for s in plan.steps[1].obj["spec"]["subsets"]] == ["v2"]  # type: ignore[index]


def test_a_pure_shift_touches_only_the_routes() -> None:
    state = _canary()
    plan = plan_change(state, state.with_traffic(TrafficState({"v1": 50, "v2": 50})))
    assert _steps(plan) == ["patch-routes VirtualService"]
    assert "weights v1=50, v2=50" in str(plan)
    assert plan_change(state, state).steps == ()


def test_delete_removes_routes_first() -> None:
    assert _steps(plan_delete(_canary()))[:3] == [
        "delete VirtualService",
        "delete DestinationRule",
        "delete Service",
    ]
