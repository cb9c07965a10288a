"""A version that outgrows one pod: options, where they live, and how they are planned.

Target defaults (``mlshift.Kubernetes(service_account=..., node_selector=..., ...)``) reach
every version's spec; ``deploy(..., resources=, autoscale=, startup=)`` changes one version.
The spec reads back from its live Deployment and from the local state file unchanged; a
version with more than one pod gets a PodDisruptionBudget, one with ``autoscale`` a
HorizontalPodAutoscaler, applied once it is ready and deleted before its Deployment; the
Role grants their verbs only when asked. Bad options are refused with the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlshift._bundle import BundleInfo
from mlshift._endpoint import _autoscale
from mlshift._exceptions import ConfigError, InvalidArgumentError
from mlshift._plan import plan_change, plan_delete
from mlshift._render import render_deployment
from mlshift._state import EndpointState, PodOptions, Resources, VersionSpec
from mlshift.kube import Kubernetes, rbac
from mlshift.kube._live import version_from_deployment

TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _target() -> Kubernetes:
    return Kubernetes(
        namespace="ml",
        registry="r.example.com/ml",
        resources={"memory_limit": "4Gi", "gpus": 1},
        service_account="churn-model",
        image_pull_secrets=["regcred"],
        node_selector={"pool": "gpu"},
        tolerations=[TOLERATION],
    )


def _spec(tmp_path: Path, **changes: object) -> VersionSpec:
    info = BundleInfo(path=tmp_path, sha256="c" * 64, flavor="sklearn", serializer="skops")
    spec = _target().prepare_version(info, "churn", "v1", dry_run=True)
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def test_target_defaults_reach_the_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.resources == Resources(memory_limit="4Gi", gpus=1)
    assert spec.pod.service_account == "churn-model"
    assert spec.pod.image_pull_secrets == ("regcred",)
    assert spec.pod.node_selector == {"pool": "gpu"}
    assert spec.pod.tolerations == (TOLERATION,)


@pytest.mark.parametrize("autoscale", [None, (2, 5, 60)])
def test_spec_reads_back_from_the_deployment_and_the_state_file(
    tmp_path: Path, autoscale: tuple[int, int, int] | None
) -> None:
    spec = _spec(tmp_path, replicas=2, autoscale=autoscale)
    state = EndpointState("churn", "ml").with_version(spec)
    assert version_from_deployment(render_deployment(state, spec)) == spec
    assert EndpointState.from_json(state.to_json()) == state


def test_companions_are_applied_once_ready_and_deleted_first(tmp_path: Path) -> None:
    one = EndpointState("churn", "ml").with_version(VersionSpec("v1", "a" * 64))
    scaled = _spec(tmp_path, name="v2", replicas=2, autoscale=(2, 5, 60))
    two = one.with_version(scaled)
    steps = [s.describe() for s in plan_change(one, two).steps]
    assert steps[:4] == [
        "apply Deployment churn-v2",
        "wait-ready Deployment churn-v2",
        "apply PodDisruptionBudget churn-v2",
        "apply HorizontalPodAutoscaler churn-v2",
    ]
    plain = [s.describe() for s in plan_change(None, one).steps]
    assert not any("PodDisruptionBudget" in s or "Autoscaler" in s for s in plain)
    removal = [s.describe() for s in plan_change(two, two.without_version("v2")).steps]
    assert removal[-3:] == [
        "delete HorizontalPodAutoscaler churn-v2",
        "delete PodDisruptionBudget churn-v2",
        "delete Deployment churn-v2",
    ]
    gone = [s.describe() for s in plan_delete(two).steps]
    assert gone.index("delete PodDisruptionBudget churn-v2") < gone.index(
        "delete Deployment churn-v2"
    )


def test_rbac_grants_companion_verbs_only_when_asked() -> None:
    def resources(**flags: bool) -> set[str]:
        role = rbac("ml", **flags)[0]
        return {r for rule in role["rules"] for r in rule["resources"]}

    base = resources()
    assert not base & {"poddisruptionbudgets", "horizontalpodautoscalers", "podmonitors"}
    assert resources(replicas=True) - base == {"poddisruptionbudgets"}
    assert resources(autoscale=True) - base == {"poddisruptionbudgets", "horizontalpodautoscalers"}
    assert resources(pod_monitor=True) - base == {"podmonitors"}


def test_bad_options_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidArgumentError, match=r"e\.g\. \(2, 8, 70\)"):
        _autoscale((5, 2, 70), 1)
    with pytest.raises(InvalidArgumentError, match="min, max"):
        _autoscale((1, 2), 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not both"):
        _autoscale((1, 3, 70), 4)
    assert _autoscale([2, 8, 70], 1) == (2, 8, 70)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gpus"):
        Kubernetes(resources={"gpu": 1})
    with pytest.raises(ConfigError, match="0 or more"):
        Resources().updated({"gpus": -1})
    assert PodOptions().service_account is None
