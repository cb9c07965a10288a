"""A version that outgrows one pod, on the Kubernetes API (kmock, tests/fixtures/kube.py).

Deploying a version with ``autoscale`` writes its Deployment without ``replicas``, then,
once it is ready, its PodDisruptionBudget and HorizontalPodAutoscaler; removing the version
and deleting the endpoint delete them before the Deployment; every request the flows sent is
one ``mlshift.rbac(..., autoscale=True)`` grants.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mlshift._plan import plan_change, plan_delete
from mlshift._state import EndpointState, TrafficState, VersionSpec
from mlshift.kube import Kubernetes, rbac
from tests.fixtures.kube import KubeEmulator

PDB = "policy/v1/poddisruptionbudgets"
HPA = "autoscaling/v2/horizontalpodautoscalers"


def _spec(version: str, **kwargs: Any) -> VersionSpec:
    sha = hashlib.sha256(version.encode()).hexdigest()
    return VersionSpec(version, sha, image=f"registry.test/ml/churn@sha256:{sha}", **kwargs)


def test_autoscaled_version_gets_its_companions_and_loses_them(
    kube_emulator: KubeEmulator,
) -> None:
    target = Kubernetes(
        kubeconfig=str(kube_emulator.kubeconfig),
        registry="registry.test/ml",
        progress=False,
        poll_interval=0.02,
        rollout_timeout=10,
    )
    engine = target.engine("churn")
    one = EndpointState("churn", "ml").with_version(_spec("v1"))
    engine.execute(plan_change(None, one))
    two = one.with_version(_spec("v2", replicas=2, autoscale=(2, 4, 70)))
    engine.execute(plan_change(one, two))

    assert kube_emulator.obj(PDB, "churn-v2") is not None
    hpa = kube_emulator.obj(HPA, "churn-v2")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert kube_emulator.obj(PDB, "churn-v1") is None  # one pod: no budget
    loaded = engine.load("churn")
    assert loaded is not None
    assert loaded[0].version("v2") == two.version("v2")  # read back, autoscale included

    engine.execute(plan_change(two, two.with_traffic(TrafficState({"v1": 100, "v2": 0}))))
    removed = two.without_version("v2")
    engine.execute(plan_change(two, removed))
    assert kube_emulator.obj(HPA, "churn-v2") is None
    assert kube_emulator.obj(PDB, "churn-v2") is None
    engine.execute(plan_change(removed, removed.with_version(_spec("v3", replicas=3))))
    assert kube_emulator.obj(PDB, "churn-v3") is not None
    loaded = engine.load("churn")
    assert loaded is not None
    engine.execute(plan_delete(loaded[0]))
    assert kube_emulator.obj(PDB, "churn-v3") is None

    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}

    def used() -> set[tuple[str, str, str]]:
        return {
            (
                req.resource.group,
                req.resource.plural,
                verbs.get(str(req.method.value).upper()) or ("get" if req.name else "list"),
            )
            for req in list(kube_emulator.kmock)
            if req.resource is not None and req.resource.plural  # not discovery
        }

    role = rbac("ml", autoscale=True)[0]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    missing = kube_emulator.run(used) - granted
    assert missing == set()


def test_pod_monitor_is_written_with_the_version_and_deleted_with_it(
    kube_emulator: KubeEmulator,
) -> None:
    target = Kubernetes(
        kubeconfig=str(kube_emulator.kubeconfig),
        registry="registry.test/ml",
        progress=False,
        poll_interval=0.02,
        rollout_timeout=10,
        pod_monitor=True,
        scrape_interval="30s",
    )
    assert target.pod.pod_monitor
    assert target.pod.scrape_interval_s == 30.0
    engine = target.engine("churn")
    one = EndpointState("churn", "ml").with_version(_spec("v1", pod=target.pod))
    engine.execute(plan_change(None, one))
    monitor = kube_emulator.obj("monitoring.coreos.com/v1/podmonitors", "churn-v1")
    assert monitor is not None
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "30s"
    loaded = engine.load("churn")
    assert loaded is not None
    assert loaded[0].version("v1") == one.version("v1")  # the monitor is read back too
    engine.execute(plan_delete(loaded[0]))
    assert kube_emulator.obj("monitoring.coreos.com/v1/podmonitors", "churn-v1") is None
