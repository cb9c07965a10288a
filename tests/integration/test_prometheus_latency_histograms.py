"""Latency histograms from a real Prometheus over a backfilled Istio-shaped TSDB, and the
canary's latency gate judging them (the Kubernetes target where journals cannot be read).

The fixture's service churn.ml (tests/fixtures/prometheus.py): v1 at 8 rps with half its
requests in (5, 10] ms, 45 % in (10, 25] and 5 % in (25, 50]; v2 at 2 rps, all in (50, 100];
v3 exported but idle; decoys in another namespace and another service.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import mlshift
from mlshift.gates import Interval, Latency
from mlshift.metrics import istio_latency_histograms
from tests.fixtures.prometheus import IstioHistory, RunningPrometheus


def test_histograms_hold_the_known_buckets(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    h = istio_history
    hists = istio_latency_histograms(
        istio_prometheus.url, service=h.service, namespace=h.namespace, since="5m", end=h.end
    )
    assert sorted(hists) == ["v1", "v2"]  # v3 observed nothing; decoys are not churn.ml
    v1, v2 = hists["v1"], hists["v2"]
    assert v1.edges[-1] == math.inf
    by_bound = dict(zip(v1.edges, v1.counts, strict=True))
    # 8 rps over 300 s (destination reports only: not doubled by the source side).
    assert v1.total == pytest.approx(8 * 300, rel=0.01)
    assert by_bound[10.0] == pytest.approx(0.5 * 8 * 300, rel=0.01)
    assert by_bound[25.0] == pytest.approx(0.45 * 8 * 300, rel=0.01)
    assert by_bound[50.0] == pytest.approx(0.05 * 8 * 300, rel=0.01)
    assert v1.quantile(0.99) == pytest.approx(45.0)  # as the frame's p99_ms
    assert v2.total == pytest.approx(2 * 300, rel=0.01)
    assert v2.quantile(0.5) == pytest.approx(75.0)


def test_unknown_service_gives_no_histograms(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    assert (
        istio_latency_histograms(
            istio_prometheus.url, service="nobody", namespace="ml", end=istio_history.end
        )
        == {}
    )


def test_the_latency_gate_on_prometheus_buckets(
    istio_prometheus: RunningPrometheus, istio_history: IstioHistory
) -> None:
    h = istio_history
    hists = istio_latency_histograms(
        istio_prometheus.url, service=h.service, namespace=h.namespace, since="5m", end=h.end
    )
    frame = pd.DataFrame({"version": ["v1", "v2"], "requests": [2400.0, 600.0]})
    slower = Interval("v2", "v1", {"v1": 80, "v2": 20}, frame, histograms=hists)
    verdict = Latency(0.2).check(slower)
    assert verdict.status == "fail", verdict.reason
    assert "Mann-Whitney on histogram buckets" in verdict.reason
    assert verdict.p_value < 1e-12
    tail = Latency(0.2, quantile=0.99).check(slower)
    assert tail.status == "fail", tail.reason
    # The other way round, the faster version passes.
    faster = Interval("v1", "v2", {"v1": 20, "v2": 80}, frame, histograms=hists)
    assert Latency(0.2).check(faster).status == "pass"
    assert Latency(0.2, quantile=0.99).check(faster).status == "pass"


def test_kubernetes_endpoint_reads_histograms_with_no_cluster(
    istio_prometheus: RunningPrometheus,
    istio_history: IstioHistory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    target = mlshift.Kubernetes(
        namespace=istio_history.namespace,
        prometheus_url=istio_prometheus.url,
        service_account_dir=tmp_path / "no-service-account",
    )
    ep = mlshift.endpoint(istio_history.service, target=target)
    # The history ended a minute or so before now: a window reaching back over it.
    hists = ep.latency_histograms(since="10m")
    assert sorted(hists) == ["v1", "v2"]
    share = hists["v1"].counts[hists["v1"].edges.index(10.0)] / hists["v1"].total
    assert share == pytest.approx(0.5, abs=0.01)
    assert hists["v2"].quantile(0.5) == pytest.approx(75.0)
