"""Prediction metrics live: real model_server processes, scraped every second by real Prometheus.

Two classifier versions of one model get the same rows; v1 always answers "0", v2 answers
by the sign of the first feature, so the class shares and their total variation distance are
known. They are read from Prometheus (``prometheus_predictions``) and straight from each
server's ``/metrics`` (``parse_exposition``, the local-mode path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlshift.metrics import (
    PredictionStats,
    parse_exposition,
    predictions_frame,
    prometheus_predictions,
)
from tests.fixtures.prometheus import RunningPrometheus, start_prometheus

pytestmark = pytest.mark.slow

# 20 rows with a positive first feature, 10 with a negative one
ROWS = np.array([[1.0 + i, 0.5] for i in range(20)] + [[-1.0 - i, 0.5] for i in range(10)])


def _bundles(dest: Path) -> dict[str, Path]:
    from sklearn.dummy import DummyClassifier
    from sklearn.tree import DecisionTreeClassifier

    from mlshift._bundle import write_bundle

    y = (ROWS[:, 0] > 0).astype(int)
    v1 = DummyClassifier(strategy="constant", constant=0).fit(ROWS, y)
    v2 = DecisionTreeClassifier(max_depth=1).fit(ROWS, y)
    return {
        version: write_bundle(
            model, version, sample=ROWS[:2], dest=dest / version, name="churn"
        ).path
        for version, model in (("v1", v1), ("v2", v2))
    }


def _predict(url: str, rows: np.ndarray[Any, Any]) -> None:
    r = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": rows.tolist()}, timeout=10)
    r.raise_for_status()


@pytest.fixture
def scraped_servers(
    tmp_path: Path, server_factory: Callable[..., Any]
) -> Iterator[tuple[RunningPrometheus, dict[str, str]]]:
    """v1 and v2 model servers and a Prometheus scraping them every second."""
    urls = {v: server_factory(path).url for v, path in _bundles(tmp_path / "bundles").items()}
    targets = ", ".join(f"'{u.removeprefix('http://')}'" for u in urls.values())
    config = (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: model_server\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    with start_prometheus(tmp_path / "prometheus", config=config) as prom:
        yield prom, urls


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _classes(prom: RunningPrometheus) -> dict[str, dict[str, float]]:
    stats = prometheus_predictions(prom.url, model="churn", since="30s")
    return {s.version: dict(s.classes) for s in stats}


def test_prediction_shares_and_divergence_from_prometheus(
    scraped_servers: tuple[RunningPrometheus, dict[str, str]],
) -> None:
    prom, urls = scraped_servers
    # Warm up: counters must be scraped once before the measured traffic, because
    # increase() only sees changes between two scrapes of an existing series.
    for url in urls.values():
        _predict(url, ROWS[[0, -1]])

    def scraped() -> bool:
        text = httpx.get(f"{prom.url}/api/v1/query", params={"query": "mlshift_predictions_total"})
        return len(text.json()["data"]["result"]) == 3  # v1 "0", v2 "0" and "1"

    _wait_for(scraped, "Prometheus to scrape the warm-up predictions")
    time.sleep(1.5)  # one more scrape holds the warm-up values
    for url in urls.values():
        _predict(url, ROWS)

    def counted() -> bool:
        classes = _classes(prom)
        return sum(classes.get("v2", {}).values()) >= 30 * 0.9

    _wait_for(counted, "the measured predictions in increase()")
    time.sleep(1.5)

    df = predictions_frame(
        prometheus_predictions(prom.url, model="churn", since="60s"), stable="v1"
    )
    shares = {(v, c): s for v, c, s in df[["version", "class", "share"]].itertuples(index=False)}
    assert shares[("v1", "0")] == pytest.approx(1.0)
    # increase() over the window sees the measured 30 rows (20 positive); its extrapolation
    # to the window's edges moves shares by a little
    assert shares[("v2", "1")] == pytest.approx(2 / 3, abs=0.05)
    divergence = df.groupby("version").divergence.first()
    assert divergence["v1"] == 0.0
    assert divergence["v2"] == pytest.approx(2 / 3, abs=0.05)
    assert prometheus_predictions(prom.url, model="someone-else", since="60s") == []

    # The same numbers straight from the servers' /metrics (how local mode reads them).
    local: list[PredictionStats] = []
    for url in urls.values():
        local += parse_exposition(httpx.get(f"{url}/metrics").text, model="churn")
    exact = predictions_frame(local, stable="v1")
    counts = {(v, c): n for v, c, n in exact[["version", "class", "count"]].itertuples(index=False)}
    assert counts == {("v1", "0"): 32.0, ("v2", "0"): 11.0, ("v2", "1"): 21.0}
    assert exact.groupby("version").divergence.first()["v2"] == pytest.approx(21 / 32)
