"""Metrics blind spots, against a real Prometheus over a backfilled Istio-shaped TSDB.

Service ``fraud`` (tests/fixtures/prometheus.py): callers' proxies answered 503 UF and 504
UT that version v2 never saw, and a 503 URX that v2 did answer. ``mesh_errors`` holds the
first two only, ``errors`` neither, and the canary gate fails v2 on them. Service
``sparse`` was scraped every 90 s: with the default 15 s scrape interval its rate windows
are empty; a target told ``scrape_interval="90s"`` reads it. The ``PodMonitor`` relabelling
moves the scrape to the port Istio's injector annotates.
"""

from __future__ import annotations

import re

import pytest

from mlshift._gates import Interval, MaxErrorRate
from mlshift._render import render
from mlshift._state import EndpointState, PodOptions, VersionSpec
from mlshift.kube import Kubernetes
from mlshift.metrics import istio_metrics
from tests.fixtures.prometheus import IstioHistory, RunningPrometheus


def test_mesh_made_errors_are_a_column_of_their_own(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    df = istio_metrics(
        istio_prometheus.url,
        service="fraud",
        namespace="ml",
        since="5m",
        step="30s",
        end=istio_history.end,
    )
    v1, v2 = df[df.version == "v1"], df[df.version == "v2"]
    assert v2.rps.to_numpy() == pytest.approx(1.0)
    assert (v2.errors == 0.0).all()  # v2's own sidecar saw no 5xx
    assert v2.mesh_errors.to_numpy() == pytest.approx((0.3 + 0.1) * 30)  # UF + UT, not URX
    assert (v1.mesh_errors == 0.0).all()
    gate = MaxErrorRate(0.05)
    verdict = gate.check(Interval("v2", "v1", {"v1": 50, "v2": 50}, df))
    assert verdict.status == "fail"
    assert "made by the mesh" in verdict.reason
    blind = Interval("v2", "v1", {"v1": 50, "v2": 50}, df.drop(columns="mesh_errors"))
    assert gate.check(blind).status == "pass"
    assert gate.check(Interval("v1", "v2", {"v1": 50, "v2": 50}, df)).status == "pass"


def test_no_caller_side_series_is_nan_not_zero(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    """Callers without proxies report nothing: mesh errors are unknown there, not zero."""
    end = istio_history.end
    direct = istio_metrics(
        istio_prometheus.url, service="direct", namespace="ml", since="2m", end=end
    )
    assert direct.rps.to_numpy() == pytest.approx(3.0)
    assert direct.mesh_errors.isna().all()
    churn = istio_metrics(
        istio_prometheus.url, service="churn", namespace="ml", since="2m", end=end
    )
    assert (churn.mesh_errors == 0.0).all()  # its callers report, and saw no mesh failure


def test_a_slow_scrape_needs_the_scrape_interval(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    options = {"service": "sparse", "namespace": "ml", "since": "10m", "step": "15s"}
    blind = istio_metrics(istio_prometheus.url, end=istio_history.end, **options)  # type: ignore[arg-type]
    assert blind.empty  # a 60 s window over samples 90 s apart holds one sample: no rate
    seen = istio_metrics(
        istio_prometheus.url,
        end=istio_history.end,
        scrape_interval="90s",
        **options,  # type: ignore[arg-type]
    )
    assert seen.rps.to_numpy() == pytest.approx(100.0)
    target = Kubernetes(namespace="ml", prometheus_url=istio_prometheus.url, scrape_interval="90s")
    assert target.engine("sparse").settings.scrape_interval == 90.0
    state = EndpointState("sparse", "ml")
    frame = target.engine("sparse").metrics(state, since=15 * 60, step=15)
    assert not frame.empty
    # Up to now, not the history's end: the window's last steps may hold the history's edge
    # (a partial rate), the ones inside it the whole one.
    assert frame.rps.max() == pytest.approx(100.0)
    default = Kubernetes(namespace="ml", prometheus_url=istio_prometheus.url)
    assert default.engine("sparse").metrics(state, since=15 * 60, step=15).empty


def test_pod_monitor_scrapes_the_port_istio_annotates() -> None:
    spec = VersionSpec("v1", pod=PodOptions(pod_monitor=True, scrape_interval_s=30))
    manifests = render(EndpointState("churn", "ml").with_version(spec))
    (monitor,) = manifests.companions["v1"]
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": "churn", "version": "v1"}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["interval"] == "30s"
    relabel = endpoint["relabelings"][0]
    joined = ";".join(["10.1.2.3:15090", "15020"])  # __address__; prometheus.io/port
    # Prometheus anchors relabel regexes (RE2, full match); Python's fullmatch agrees here.
    match = re.fullmatch(relabel["regex"], joined)
    assert match is not None
    assert relabel["replacement"].replace("$1", match[1]).replace("$2", match[2]) == (
        "10.1.2.3:15020"
    )
    annotations = manifests.deployments["v1"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080"  # what the injector rewrites to 15020
