"""The statistical canary and readable shadow traffic on the real local mesh.

Real Envoy, real model_server processes, real traffic (``ep.send``): a good version is
promoted; one failing 3 % of requests against a stable at 0.5 % is rolled back by the
relative error gate while an absolute 5 % limit passes it; one 40 % slower trips the latency
gate, and so does one whose p99 alone is far worse (from the journals and from Envoy's
histogram buckets alone); traffic reaching the canary outside its weight trips the
sample-ratio check; no traffic times out without promoting; cancellation and an error
restore a three-way split. Shadow: a version that disagrees on a planted 10 % of inputs
shows 90 % +- 3 agreement over 2,000 mirrored requests, while users only ever got the
primary's answers. One endpoint with every version serves the whole module (starting
processes is the slow part).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift._canary import run_canary
from mlshift.gates import ErrorRate, Interval, Latency, MaxErrorRate, SampleRatio, Verdict
from mlshift.local import Local

pytestmark = [pytest.mark.slow, pytest.mark.serial]


class Planted:
    """A classifier that raises on rows whose feature 2 is at or above ``fail_from``, sleeps
    ``delay_s`` per call (and ``slow_s`` more on rows whose feature 0 is at or above
    ``slow_from``: a slow tail), and flips its answer where feature 3 is above ``flip_above``."""

    def __init__(
        self,
        model: Any,
        *,
        fail_from: float = np.inf,
        delay_s: float = 0.0,
        flip_above: float = np.inf,
        slow_from: float = np.inf,
        slow_s: float = 0.0,
    ) -> None:
        self.model, self.fail_from, self.delay_s = model, fail_from, delay_s
        self.flip_above = flip_above
        self.slow_from, self.slow_s = slow_from, slow_s
        self.classes_ = model.classes_

    def predict(self, X: Any) -> Any:
        rows = np.asarray(X, dtype=float)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.slow_s and (rows[:, 0] >= self.slow_from).any():
            time.sleep(self.slow_s)
        if (rows[:, 2] >= self.fail_from).any():
            raise ValueError("planted failure")
        answer = self.model.predict(rows)
        flip = rows[:, 3] > self.flip_above
        return np.where(flip, 1 - answer, answer)


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4))
    y = (X[:, 1] + X[:, 2] > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def ep(tmp_path_factory: pytest.TempPathFactory, data: tuple[Any, Any]) -> Iterator[Any]:
    X, y = data
    base = LogisticRegression().fit(X, y)
    feature2 = np.sort(X[:, 2])
    half_percent = feature2[-2]  # the top 2 of 400 rows: 0.5 %
    three_percent = feature2[-12]  # the top 12 of 400 rows: 3 %
    safe = X[X[:, 2] < half_percent][:5]
    endpoint = mlshift.endpoint("churn", target=Local(state_dir=tmp_path_factory.mktemp("mesh")))
    try:
        endpoint.deploy(Planted(base, fail_from=half_percent), "v1", sample=safe, trust_pickle=True)
        endpoint.deploy(
            Planted(base, fail_from=half_percent, delay_s=0.05),
            "v2",
            sample=safe,
            trust_pickle=True,
        )
        endpoint.deploy(
            Planted(base, fail_from=three_percent), "v3", sample=safe, trust_pickle=True
        )
        endpoint.deploy(
            Planted(base, fail_from=half_percent, delay_s=0.07),
            "v4",
            sample=safe,
            trust_pickle=True,
        )
        flip = float(np.quantile(X[:, 3], 0.9))
        endpoint.deploy(Planted(base, flip_above=flip), "v5", sample=safe, trust_pickle=True)
        yield endpoint
    finally:
        endpoint.delete()


@pytest.fixture
def fresh(ep: Any) -> Any:
    """The endpoint with all traffic on v1 and no mirror, whatever the last test left."""
    ep.shadow(None)
    ep.promote("v1")
    return ep


def test_a_good_version_is_promoted(fresh: Any, data: tuple[Any, Any]) -> None:
    X, _ = data
    traffic = fresh.send(X, rps=200, duration="30s")
    gates = [ErrorRate(0.01, min_requests=100), SampleRatio()]
    run = fresh.canary("v2", steps=(50, 100), interval="2s", gates=gates, max_inconclusive=6)
    run.wait()
    traffic.stop()
    assert run.outcome == "promoted", run.history
    assert fresh.weights["v2"] == 100


def test_relative_gate_rolls_back_what_an_absolute_limit_passes(
    fresh: Any, data: tuple[Any, Any]
) -> None:
    X, _ = data
    traffic = fresh.send(X, rps=300, duration="60s", concurrency=32)
    gates = [ErrorRate(0.005), MaxErrorRate(0.05, min_requests=50)]
    # One failing look suffices: the gates' false-alarm rate is bounded by alpha over the run.
    run = fresh.canary(
        "v3", steps=(50, 100), interval="5s", gates=gates, threshold=1, max_inconclusive=10
    )
    run.wait()
    traffic.stop()
    history = run.history
    assert run.outcome.startswith("rolled back to v1: error-rate"), history
    assert set(history["max-error-rate"]) <= {"pass", "inconclusive"}, history
    assert len(history) <= 2, history  # within two intervals of getting traffic
    assert fresh.weights == {"v1": 100, "v2": 0, "v3": 0, "v4": 0, "v5": 0}


def test_latency_gate_trips_on_a_forty_percent_slower_version(
    fresh: Any, data: tuple[Any, Any]
) -> None:
    X, _ = data
    fresh.promote("v2")  # 50 ms a call; v4 takes 70 ms
    # A rate both versions serve without queueing: the model's time is what differs.
    traffic = fresh.send(X, rps=40, duration="40s")
    # The whole distribution (Mann-Whitney): on a loaded 2-core machine the p99 of both is
    # scheduling noise, the median is the model's time.
    gates = [Latency(0.2)]
    run = fresh.canary("v4", steps=(50, 100), interval="3s", gates=gates)
    run.wait()
    traffic.stop()
    assert run.outcome.startswith("rolled back to v2: latency"), list(run.history["reason"])
    assert "Mann-Whitney" in run.outcome


class WithoutJournals:
    """An endpoint whose request journals cannot be read (as on a cluster whose RBAC denies
    the pod proxy): the canary falls back to the router's latency histograms."""

    def __init__(self, ep: Any) -> None:
        self._ep = ep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ep, name)

    def journal(self, version: str, since: Any = "10m") -> Any:
        raise mlshift.MlshiftError(f"no journal for {version} here")

    def reader(self) -> WithoutJournals:
        return self


def test_latency_gate_trips_on_a_slow_tail(fresh: Any, data: tuple[Any, Any]) -> None:
    """A v6 whose median is v1's but whose p99 is far worse (5 % of rows take 60 ms more)
    is rolled back by the p99 gate, from the journals and from Envoy's buckets alone."""
    X, y = data
    slow_from = float(np.sort(X[:, 0])[-20])  # the top 20 of 400 rows: 5 %
    fast = X[X[:, 0] < slow_from][:5]
    tail = Planted(LogisticRegression().fit(X, y), slow_from=slow_from, slow_s=0.06)
    fresh.deploy(tail, "v6", sample=fast, trust_pickle=True)
    # A rate at which the slow rows barely queue the others: only the tail is slower.
    traffic = fresh.send(X, rps=40, duration="90s")
    try:
        started = time.time()
        gates = [Latency(0.2, quantile=0.99)]
        run = fresh.canary("v6", steps=(50, 100), interval="4s", gates=gates)
        run.wait()
        reasons = list(run.history["reason"])
        assert run.outcome.startswith("rolled back to v1: latency: p99"), reasons
        assert "binomial p=" in run.outcome
        # The router's histograms over the same time: the same median bucket, p99 >= 40 % worse.
        hists = fresh.latency_histograms(since=time.time() - started)
        v1, v6 = hists["v1"], hists["v6"]
        assert v6.quantile(0.99) >= 1.4 * v1.quantile(0.99), (v1, v6)
        assert v6.quantile(0.5) <= 1.2 * v1.quantile(0.5) + 1.0, (v1, v6)
        # The same judgement without journals: on Envoy's upstream_rq_time buckets.
        blind = run_canary(WithoutJournals(fresh), "v6", steps=(50, 100), interval=4, gates=gates)
        assert blind.outcome.startswith("rolled back to v1: latency: p99"), list(
            blind.history["reason"]
        )
        assert "binomial on histogram buckets" in blind.outcome
    finally:
        traffic.stop()
        fresh.promote("v1")
        fresh.remove("v6")


def test_traffic_outside_the_weights_trips_the_sample_ratio_check(
    fresh: Any, data: tuple[Any, Any]
) -> None:
    X, _ = data
    # The planted fault: a client pins requests to v2 around the weighted route.
    stop = threading.Event()
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}]}

    def pinned() -> None:
        url = f"{fresh.url}/v2/models/churn/versions/v2/infer"
        with httpx.Client(trust_env=False, timeout=5) as client:
            while not stop.is_set():
                client.post(url, json=body)

    thread = threading.Thread(target=pinned, daemon=True)
    thread.start()
    traffic = fresh.send(X, rps=150, duration="30s")
    try:
        run = fresh.canary("v2", steps=(10, 100), interval="2s", gates=[SampleRatio()])
        run.wait()
    finally:
        stop.set()
        traffic.stop()
        thread.join()
    assert "sample-ratio mismatch" in run.outcome, run.history
    assert set(run.history["verdict"]) == {"invalid"}
    assert fresh.weights["v2"] == 0


def test_no_traffic_is_inconclusive_then_times_out(fresh: Any) -> None:
    # The test before sent v2 requests outside its weight. Envoy merges latencies into its
    # histograms at each 1 s stats flush, so those requests would show in a look beginning
    # at once (and this v2 is the slow one): let them leave the window first.
    time.sleep(2.5)
    run = fresh.canary("v2", steps=(50, 100), interval="1s", max_inconclusive=1)
    run.wait()
    assert list(run.history["verdict"]) == ["inconclusive", "inconclusive"]
    assert run.outcome.startswith("rolled back to v1: timed out at 50 %")
    assert fresh.weights["v2"] == 0


class Exploding:
    name = "exploding"

    def check(self, interval: Interval) -> Verdict:
        raise RuntimeError("a gate broke")


def test_cancel_and_errors_restore_a_three_way_split(fresh: Any) -> None:
    split = {"v1": 60, "v2": 0, "v3": 0, "v4": 0, "v5": 40}
    fresh.shift(split)
    run = fresh.canary("v2", steps=(50, 100), interval="60s")
    deadline = time.monotonic() + 30
    while fresh.reader().weights["v2"] != 50 and time.monotonic() < deadline:
        time.sleep(0.2)  # the run's thread shifts to its first step
    assert fresh.reader().weights["v2"] == 50
    run.cancel()
    assert run.outcome == "rolled back to v1 60 %, v5 40 %: cancelled"
    assert fresh.reader().weights == split
    run = fresh.canary("v2", steps=(50, 100), interval="0.5s", gates=[Exploding()])
    with pytest.raises(RuntimeError, match="a gate broke"):
        run.wait()
    assert "error: RuntimeError: a gate broke" in run.outcome
    assert fresh.reader().weights == split


def test_shadow_answers_are_paired_by_request_id(fresh: Any, data: tuple[Any, Any]) -> None:
    X, _ = data
    fresh.shadow("v5", percent=100)
    started = time.time()
    versions: set[str] = set()
    ok = 0
    while ok < 2000:  # however fast this machine sends
        sent = fresh.send(X, rps=250, duration="4s", concurrency=32).wait().results
        versions |= set(sent[sent["status"] == 200]["version"])
        ok += int((sent["status"] == 200).sum())
    time.sleep(1.0)  # mirrored copies finish after the primary answered
    assert versions == {"v1"}  # users only ever got the primary's answers
    cmp = fresh.compare("v1", "v5", since=time.time() - started + 1)
    s = cmp.summary
    assert s["pairs"] >= 0.98 * ok, s
    assert abs(s["agreement"] - 0.90) <= 0.03, (s, cmp.frame.head(10).to_dict("records"))
    assert s["agreement_low"] < s["agreement"] < s["agreement_high"]
    assert s["digest_mismatches"] == 0
    assert cmp.confusion is not None and cmp.confusion.to_numpy().sum() == s["pairs"]
    assert {"v1", "v5", "agree"} <= set(cmp.frame.columns)


def test_the_journal_records_ids_latencies_and_answers(fresh: Any, tmp_path: Path) -> None:
    fresh.predict(np.zeros((1, 4)))
    journal = fresh.journal("v1", since="1m")
    assert not journal.empty
    last = journal.iloc[-1]
    assert last["id"] and last["status"] == 200 and last["latency_ms"] > 0
    assert last["prediction"] in (0, 1)


def test_the_command_line_exits_non_zero_without_promotion(
    fresh: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlshift.__main__ import main

    monkeypatch.setenv("MLSHIFT_HOME", str(fresh.target.home))
    argv = ["canary", "churn", "v2", "--steps", "50,100", "--interval", "1s"]
    assert main([*argv, "--max-inconclusive", "0"]) == 1  # no traffic: timed out
    assert "timed out at 50 %" in capsys.readouterr().err
    assert fresh.reader().weights["v2"] == 0
