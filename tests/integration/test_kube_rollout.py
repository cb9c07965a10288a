"""Rollout judgement on the strict counterpart, and reads that ride out a busy API server.

- A first ``ErrImagePull`` right after a push is often transient: the rollout goes on; an
  ``ErrImagePull`` saying 401/not found fails at once, as ``ImagePullBackOff`` does.
- The Deployment's ``ReplicaFailure`` (a quota, a Pod Security rejection) fails the rollout at
  once instead of at ``rollout_timeout``.
- GET/LIST answered 429 (with ``Retry-After``) or 5xx are read again.
"""

from __future__ import annotations

import pytest

from mlshift._exceptions import APIError, NotReadyError
from tests.fixtures.kube import KubeEmulator
from tests.integration.test_kube_engine import _deploy, _spec, _subsets, _target

DIGEST = "@sha256:" + "7" * 64


def test_a_transient_err_image_pull_is_waited_out(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1", image="registry.test/ml/churn-slowpull" + DIGEST))
    assert _subsets(kube_emulator) == ["v1"]


def test_an_unauthorized_pull_fails_at_once(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, rollout_timeout=60).engine("churn")
    with pytest.raises(NotReadyError, match="401 Unauthorized") as info:
        _deploy(engine, _spec("v1", image="registry.test/ml/churn-unauthorized" + DIGEST))
    assert info.value.reason == "ErrImagePull"
    assert "within" not in str(info.value)  # judged, not timed out


def test_replica_failure_fails_at_once(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator, rollout_timeout=5).engine("churn")
    with pytest.raises(NotReadyError, match="FailedCreate: .*exceeded quota") as info:
        _deploy(engine, _spec("v1", image="registry.test/ml/churn-quota" + DIGEST))
    assert info.value.reason == "FailedCreate"
    assert "within" not in str(info.value)  # the condition, not rollout_timeout


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, None)])
def test_reads_ride_out_429_and_5xx(
    kube_emulator: KubeEmulator, status: int, retry_after: str | None
) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    kube_emulator.run(
        lambda: kube_emulator.kmock.fail_next("GET", "deployments", status, retry_after=retry_after)
    )
    before = len(kube_emulator.run(lambda: list(kube_emulator.kmock)))
    loaded = engine.load("churn")
    assert loaded is not None and loaded[0].version_names == ["v1"]
    lists = [
        r
        for r in kube_emulator.run(lambda: list(kube_emulator.kmock))[before:]
        if r.resource is not None and r.resource.plural == "deployments"
    ]
    assert len(lists) == 2  # refused once, read again


def test_writes_are_not_retried(kube_emulator: KubeEmulator) -> None:
    kube_emulator.run(lambda: kube_emulator.kmock.fail_next("POST", "deployments", 503))
    engine = _target(kube_emulator).engine("churn")
    with pytest.raises(APIError) as info:
        _deploy(engine, _spec("v1"))
    assert info.value.code == 503
    assert [w for w in kube_emulator.writes() if w[1] == "deployments"] == [
        ("POST", "deployments", "churn-v1")
    ]
