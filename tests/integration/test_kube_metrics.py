"""``ep.metrics()`` on the Kubernetes target needs only Prometheus: no API server, no kubeconfig.

Runs the facade against the real Prometheus fixture (a TSDB backfilled with Istio-shaped
series of service churn.ml) with a Kubernetes target that has no cluster to find.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mlshift
from mlshift.metrics import FRAME_COLUMNS
from tests.fixtures.prometheus import IstioHistory, RunningPrometheus


def test_metrics_from_prometheus_with_no_cluster(
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
    with pytest.raises(mlshift.ConfigError, match="searched|kubeconfig"):
        ep.status()
    frame = ep.metrics(since="15m", step="1m")
    assert list(frame.columns) == FRAME_COLUMNS
    assert not frame.empty
    known = {v.version: v.rps for v in istio_history.versions if v.rps}
    observed = frame.dropna(subset=["rps"]).groupby("version")["rps"].median()
    for version, rps in known.items():
        assert observed[version] == pytest.approx(rps, rel=0.05)
