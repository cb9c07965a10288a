"""The facade's logic (validation, pro-rata, history, rollback, dry runs, module verbs).

The engine seam is filled by ``MemoryTarget``: a small, real in-memory engine that applies
plans to a dict, the way httpx tests plug a transport in. The real engines are tested
against Envoy and the Kubernetes emulator in tests/integration/.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

import mlshift
from mlshift._plan import Plan
from tests.unit.memory import MemoryEngine, MemoryTarget


def _memory(ep: mlshift.Endpoint) -> MemoryEngine:
    engine = ep.engine
    assert isinstance(engine, MemoryEngine)
    return engine


@pytest.fixture
def ep(models: list[Any]) -> mlshift.Endpoint:
    ep = mlshift.endpoint("churn", target=MemoryTarget())
    ep.deploy(models[0], "v1")
    ep.deploy(models[1], "v2")
    return ep


def test_first_version_takes_all_and_the_second_none(ep: mlshift.Endpoint) -> None:
    assert ep.weights == {"v1": 100, "v2": 0}
    assert ep.versions["v2"].ready is True


def test_shift_forms(ep: mlshift.Endpoint, models: list[Any]) -> None:
    ep.shift({"v1": 90, "v2": 10})
    assert ep.weights == {"v1": 90, "v2": 10}
    ep.deploy(models[2], "v3")
    ep.shift("v3", 20)
    assert ep.weights == {"v1": 72, "v2": 8, "v3": 20}


def test_invalid_weights_change_nothing(ep: mlshift.Endpoint) -> None:
    engine = _memory(ep)
    before = len(engine.plans)
    with pytest.raises(mlshift.InvalidWeightsError, match="sum to 110"):
        ep.shift({"v1": 100, "v2": 10})
    with pytest.raises(mlshift.InvalidWeightsError, match="'v9'"):
        ep.shift({"v9": 100})
    engine.down.add("v2")
    with pytest.raises(mlshift.InvalidWeightsError, match="not ready"):
        ep.shift({"v1": 50, "v2": 50})
    assert len(engine.plans) == before
    assert ep.weights == {"v1": 100, "v2": 0}


def test_rollback_walks_back_through_history(ep: mlshift.Endpoint) -> None:
    ep.shift({"v1": 90, "v2": 10})
    ep.shift({"v1": 50, "v2": 50})
    ep.promote("v2")
    assert ep.history()[-1] == {"v1": 50, "v2": 50}
    ep.rollback()
    assert ep.weights == {"v1": 50, "v2": 50}
    ep.rollback()
    assert ep.weights == {"v1": 90, "v2": 10}
    ep.rollback(to="v1")
    assert ep.weights == {"v1": 100, "v2": 0}


def test_rollback_without_history_says_what_to_do(models: list[Any]) -> None:
    ep = mlshift.endpoint("fresh", target=MemoryTarget())
    ep.deploy(models[0], "v1")
    with pytest.raises(mlshift.InvalidWeightsError, match="rollback\\(to="):
        ep.rollback()


def test_remove_refuses_a_version_with_traffic(ep: mlshift.Endpoint) -> None:
    with pytest.raises(mlshift.InvalidWeightsError, match="shift it away first"):
        ep.remove("v1")
    ep.promote("v2")
    ep.remove("v1")
    assert list(ep.versions) == ["v2"]
    with pytest.raises(mlshift.UnknownVersionError, match="no version 'v1'"):
        ep.promote("v1")


def test_redeploying_a_name_with_another_model_is_refused(
    ep: mlshift.Endpoint, models: list[Any]
) -> None:
    with pytest.raises(mlshift.MlshiftError, match="such as 'v3'"):
        ep.deploy(models[2], "v2")
    assert ep.deploy(models[1], "v2").name == "v2"  # same model: nothing to do


def test_dry_run_builds_state_in_memory_and_returns_the_plan(models: list[Any]) -> None:
    target = MemoryTarget()
    ep = mlshift.Endpoint("churn", target)
    p1 = ep.deploy(models[0], "v1", dry_run=True)
    p2 = ep.deploy(models[1], "v2", dry_run=True)
    p3 = ep.shift({"v1": 90, "v2": 10}, dry_run=True)
    assert isinstance(p1, Plan) and isinstance(p2, Plan) and isinstance(p3, Plan)
    assert "weights v1=90, v2=10" in str(p3)
    assert target.engines["churn"].plans == []
    yaml_text = ep.render()
    assert "subset: v2" in yaml_text and "weight: 10" in yaml_text
    assert yaml_text._repr_markdown_().startswith("```yaml")


def test_module_level_deploy_uses_the_current_endpoint(models: list[Any], tmp_path: Path) -> None:
    ep = mlshift.endpoint("other", target=MemoryTarget())
    assert mlshift.current() is ep
    version = mlshift.deploy(models[0], "v1")
    assert isinstance(version, mlshift.Version) and ep.weights == {"v1": 100}


def test_delete_runs_routes_first(ep: mlshift.Endpoint) -> None:
    plan = ep.delete(dry_run=True)
    assert isinstance(plan, Plan)
    assert [s.kind for s in plan.steps][:2] == ["VirtualService", "DestinationRule"]
    assert ep.weights == {"v1": 100, "v2": 0}
    assert ep.delete() is ep
    assert ep.weights == {}


def test_exports_are_sorted_and_resolve() -> None:
    assert mlshift.__all__ == sorted(mlshift.__all__)
    for name in mlshift.__all__:
        assert getattr(mlshift, name) is not None


def test_kubernetes_dry_run_needs_no_cluster_and_binds_the_gateway(
    models: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    target = mlshift.Kubernetes(
        namespace="ml",
        registry="registry.example.com/ml",
        gateways=["istio-system/ingressgateway", "mesh"],
        hosts=["churn.example.com"],
        service_account_dir=tmp_path / "no-sa",
    )
    ep = mlshift.Endpoint("churn", target)
    ep.deploy(models[0], "v1", dry_run=True)
    ep.deploy(models[1], "v2", dry_run=True)
    plan = ep.shift({"v1": 80, "v2": 20}, dry_run=True)
    assert "weights v1=80, v2=20" in str(plan)
    text = ep.render()
    assert "image: registry.example.com/ml/churn:churn-v2@sha256:<resolved-at-deploy>" in text
    deployments = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment"]
    note = deployments[-1]["metadata"]["annotations"]["mlshift.io/image-placeholder"]
    assert note.startswith("dry run: registry.example.com/ml/churn:churn-v2 is not built yet")
    assert "- istio-system/ingressgateway" in text
    assert "- churn.example.com" in text


def test_rollback_skips_splits_that_route_as_now(models: list[Any]) -> None:
    ep = mlshift.Endpoint("churn", MemoryTarget())
    ep.deploy(models[0], "v1")
    ep.shift({"v1": 100})  # nothing changes: no history entry
    ep.deploy(models[1], "v2")
    ep.shift({"v1": 50, "v2": 50})
    ep.rollback()
    assert ep.weights == {"v1": 100, "v2": 0}
    with pytest.raises(mlshift.InvalidWeightsError, match="no earlier"):
        ep.rollback()


def test_header_rules_and_mirror(ep: mlshift.Endpoint) -> None:
    ep.route_header("X-Canary", "yes", "v2")
    ep.route_header("x-canary", "team-", "v2", match="prefix")  # replaces the rule
    ep.mirror("v2", 25)
    state = ep._state
    assert state is not None
    assert [(h.header, h.value, h.match) for h in state.traffic.headers] == [
        ("x-canary", "team-", "prefix")
    ]
    assert state.traffic.mirror is not None
    assert state.traffic.mirror.percent == 25
    text = ep.render()
    assert "prefix: team-" in text
    assert "mirrorPercentage" in text
    ep.route_header("x-canary", "", None)
    ep.mirror(None)
    assert ep._state is not None
    assert ep._state.traffic.headers == ()
    assert ep._state.traffic.mirror is None
    with pytest.raises(ValueError, match="header name"):
        ep.route_header("x canary", "1", "v2")
    with pytest.raises(ValueError, match="within"):
        ep.mirror("v2", 0)
    with pytest.raises(mlshift.UnknownVersionError):
        ep.route_header("x-a", "1", "v9")


def test_a_dry_run_never_changes_what_is_shown_as_applied(ep: mlshift.Endpoint) -> None:
    plan = ep.shift({"v1": 10, "v2": 90}, dry_run=True)
    assert "weights v1=10, v2=90" in str(plan)
    assert ep.weights == {"v1": 100, "v2": 0}
    assert "weight: 90" in ep.render()  # render shows what is planned
    ep.shift({"v1": 80, "v2": 20})
    assert ep.weights == {"v1": 80, "v2": 20}
    assert "weight: 20" in ep.render()
    assert "(dry run)" not in repr(ep)


def test_a_concurrent_change_is_built_upon_not_overwritten(ep: mlshift.Endpoint) -> None:
    other = mlshift.Endpoint("churn", ep.target)
    engine = _memory(ep)
    engine.meanwhile = lambda: other.route_header("x-team", "a", "v2")
    ep.shift("v2", 30)
    state = engine.state
    assert dict(state.traffic.weights) == {"v1": 70, "v2": 30}
    assert [h.header for h in state.traffic.headers] == ["x-team"]  # the other change survived


def test_endless_conflicts_give_up_with_conflict_error(ep: mlshift.Endpoint) -> None:
    other = mlshift.Endpoint("churn", ep.target)
    engine = _memory(ep)
    weights = itertools.cycle([10, 20, 30, 40, 50, 60])  # until the retry deadline

    def keep_changing() -> None:
        other.shift("v2", next(weights))
        engine.meanwhile = keep_changing

    engine.meanwhile = keep_changing
    with pytest.raises(mlshift.ConflictError):
        ep.shift({"v1": 0, "v2": 100})
    engine.meanwhile = None
