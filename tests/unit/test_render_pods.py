"""What the rendered pods and routes do on a real cluster: retries, probes, drain, startup.

Istio's default retry policy retries 503 (``retriable-status-codes`` with 503); an explicit
``retryOn`` replaces it, so mlshift's must name both, and the local translator must turn
them into Envoy's retriable status codes. Readiness tolerates a slow answer (3 failures, a
realistic timeout); a startup probe gives a large model its load time; a ``preStop`` wait
keeps a stopping pod serving while endpoints update, and the grace period covers it. The
settings come from ``mlshift.Kubernetes(startup=..., drain=...)`` and read back from the
live Deployment unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlshift._bundle import BundleInfo
from mlshift._render import render, render_deployment
from mlshift._state import EndpointState, PodOptions, VersionSpec
from mlshift.kube import Kubernetes
from mlshift.kube._live import version_from_deployment
from mlshift.local._xds import retry_policy


def _state(spec: VersionSpec) -> EndpointState:
    return EndpointState("churn", namespace="ml").with_version(spec)


def test_default_retry_policy_keeps_istios_503_retry() -> None:
    vs = render(_state(VersionSpec("v1"))).virtual_service
    for route in vs["spec"]["http"]:
        retry_on = route["retries"]["retryOn"].split(",")
        assert "retriable-status-codes" in retry_on
        assert "503" in retry_on
        assert {"connect-failure", "refused-stream"} <= set(retry_on)
    policy = retry_policy(vs["spec"]["http"][-1]["retries"])
    assert policy is not None
    assert policy["retriable_status_codes"] == [503]
    assert "retriable-status-codes" in policy["retry_on"].split(",")


def _container(dep: dict[str, object]) -> dict[str, object]:
    return dep["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index,no-any-return]


def test_probes_tolerate_a_slow_answer_and_give_the_model_its_startup_time() -> None:
    spec = VersionSpec("v1", pod=PodOptions(startup_s=600, drain_s=5))
    c = _container(render_deployment(_state(spec), spec))
    ready = c["readinessProbe"]
    assert ready["failureThreshold"] >= 3  # type: ignore[index]
    assert ready["timeoutSeconds"] >= 2  # type: ignore[index]
    assert c["livenessProbe"]["timeoutSeconds"] >= 2  # type: ignore[index]
    startup = c["startupProbe"]
    allowance = startup["periodSeconds"] * startup["failureThreshold"]  # type: ignore[index]
    assert allowance >= 600


def test_prestop_wait_keeps_serving_and_fits_in_the_grace_period() -> None:
    spec = VersionSpec("v1", pod=PodOptions(drain_s=1))
    dep = render_deployment(_state(spec), spec)
    command = _container(dep)["lifecycle"]["preStop"]["exec"]["command"]  # type: ignore[index]
    assert command[0] == "python"  # the image's entrypoint interpreter
    # The hook really waits, and exits 0 (a failing hook is logged as an event).
    done = subprocess.run([sys.executable, *command[1:]], check=False, timeout=30)
    assert done.returncode == 0
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    env = {e["name"]: e["value"] for e in _container(dep)["env"]}  # type: ignore[attr-defined]
    assert grace > 1 + float(env["MLSHIFT_GRACE_PERIOD_S"])
    none = VersionSpec("v1", pod=PodOptions(drain_s=0))
    assert "lifecycle" not in _container(render_deployment(_state(none), none))


def test_target_options_reach_the_deployment_and_read_back(tmp_path: Path) -> None:
    target = Kubernetes(namespace="ml", registry="r.example.com/ml", startup="15m", drain="8s")
    info = BundleInfo(path=tmp_path, sha256="a" * 64, flavor="sklearn", serializer="skops")
    spec = target.prepare_version(info, "churn", "v1", dry_run=True)
    assert spec.pod == PodOptions(startup_s=900.0, drain_s=8.0)
    dep = render_deployment(_state(spec), spec)
    assert version_from_deployment(dep).pod == spec.pod
    assert version_from_deployment(dep) == spec


def test_dry_run_image_is_a_marked_placeholder_no_kubelet_pulls(tmp_path: Path) -> None:
    """A dry run has no digest: the tag it would push, a placeholder digest, and a note."""
    import yaml

    from mlshift.kube._live import FATAL_REASONS

    target = Kubernetes(namespace="ml", registry="r.example.com/ml")
    info = BundleInfo(path=tmp_path, sha256="a" * 64, flavor="sklearn", serializer="skops")
    spec = target.prepare_version(info, "churn", "v1", dry_run=True)
    assert spec.image == "r.example.com/ml/churn:churn-v1@sha256:<resolved-at-deploy>"
    text = render(_state(spec)).to_yaml()
    dep = next(d for d in yaml.safe_load_all(text) if d["kind"] == "Deployment")
    assert _container(dep)["image"] == spec.image
    note = dep["metadata"]["annotations"]["mlshift.io/image-placeholder"]
    assert "r.example.com/ml/churn:churn-v1 is not built yet" in note
    # Not a pullable reference: a kubelet answers InvalidImageName, which mlshift reports.
    assert "InvalidImageName" in FATAL_REASONS
    digest = spec.image.rsplit("@", 1)[1]
    assert not digest.removeprefix("sha256:").isalnum()
    built = VersionSpec("v1", image=f"r.example.com/ml/churn@sha256:{'b' * 64}")
    assert "annotations" not in render_deployment(_state(built), built)["metadata"]
