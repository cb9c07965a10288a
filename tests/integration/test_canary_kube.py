"""The statistical canary on the Kubernetes target, with both routings, judged from a real
Prometheus.

The engine writes to the kmock emulator over HTTP with the official client
(``tests/fixtures/kube.py``); the mesh's data plane is ``IstioTraffic``
(``tests/fixtures/istio_traffic.py``): simulated requests whose split follows the managed
route *as stored in the emulator*, counted in Istio's metrics and scraped every second by a
real Prometheus, which ``ep.metrics`` and ``ep.latency_histograms`` read. The pods are not
backed by processes, so the journals cannot be read and the latency gate judges Istio's
histogram buckets (the reasons say so).

With VirtualService routing and with ``routing="gateway-api"`` (HTTPRoute): a good v2 is
promoted through every step (the stored route ends at v2 100, and the traffic follows it);
a v3 failing 8 % of requests against a stable at 0.2 % is rolled back to the exact three-way
split in place before the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

import mlshift
from mlshift._plan import plan_change
from mlshift._state import EndpointState, VersionSpec
from mlshift.gates import ErrorRate, Latency, SampleRatio
from mlshift.kube import Kubernetes
from tests.fixtures.istio_traffic import Behaviour, IstioExporter, IstioTraffic, route_weights
from tests.fixtures.kube import KubeEmulator, emulator_target
from tests.fixtures.prometheus import RunningPrometheus

pytestmark = pytest.mark.slow  # simulated traffic and 1 s scrapes: fine beside other tests

ROUTINGS = ["istio", "gateway-api"]
RPS = 400.0


def _target(emu: KubeEmulator, prom: RunningPrometheus, routing: str) -> Kubernetes:
    return emulator_target(
        emu, settle_time=0.02, prometheus_url=prom.url, scrape_interval="1s", routing=routing
    )


def _deploy(target: Kubernetes, endpoint: str, routing: str, *versions: str) -> None:
    """Put versions on the emulator (images aside: the image tests cover building them)."""
    engine = target.engine(endpoint)
    for version in versions:
        sha = hashlib.sha256(f"{endpoint}/{version}".encode()).hexdigest()
        spec = VersionSpec(version, model_sha256=sha, image=f"registry.test/ml/m@sha256:{sha}")
        loaded = engine.load(endpoint)
        old, history = loaded if loaded else (None, ())
        base = old or EndpointState(endpoint, namespace="ml", routing=routing)
        engine.execute(plan_change(old, base.with_version(spec), history=history))


@contextlib.contextmanager
def _traffic(
    emu: KubeEmulator,
    exporter: IstioExporter,
    prom: RunningPrometheus,
    *,
    endpoint: str,
    routing: str,
    behaviour: Mapping[str, Behaviour],
) -> Iterator[IstioTraffic]:
    """Traffic following the stored route, once Prometheus has a rate for it."""
    traffic = IstioTraffic(
        exporter,
        lambda: route_weights(emu, endpoint, routing),
        endpoint=endpoint,
        namespace="ml",
        routing=routing,
        rps=RPS,
        behaviour=behaviour,
    )
    try:
        promql = f'sum(rate(istio_requests_total{{destination_app="{endpoint}"}}[3s]))'
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.post(f"{prom.url}/api/v1/query", data={"query": promql}).json()
            if answer["data"]["result"] and float(answer["data"]["result"][0]["value"][1]) > 0:
                break
            assert time.monotonic() < deadline, "Prometheus never saw the simulated traffic"
            time.sleep(0.2)
        yield traffic
    finally:
        traffic.stop()


def _grows(traffic: IstioTraffic, seconds: float = 1.0) -> set[str]:
    """The versions that get requests over the next ``seconds``."""
    before = dict(traffic.sent)
    time.sleep(seconds)
    return {v for v, n in traffic.sent.items() if n > before.get(v, 0)}


def _name(kind: str, routing: str) -> str:
    # Distinct per test: one Prometheus serves the module. Not "<a>-<b>" of another name:
    # Gateway API routing reads the Services "<endpoint>-<version>" too.
    return kind + ("gw" if routing == "gateway-api" else "vs")


@pytest.mark.parametrize("routing", ROUTINGS)
def test_a_good_version_is_promoted_through_every_step(
    kube_emulator: KubeEmulator,
    istio_exporter: IstioExporter,
    istio_scraper: RunningPrometheus,
    routing: str,
) -> None:
    name = _name("good", routing)
    target = _target(kube_emulator, istio_scraper, routing)
    _deploy(target, name, routing, "v1", "v2")
    ep = mlshift.endpoint(name, target=target)
    assert ep.status().attrs["routing"] == routing
    same = {"v1": Behaviour(), "v2": Behaviour()}
    with _traffic(
        kube_emulator, istio_exporter, istio_scraper, endpoint=name, routing=routing, behaviour=same
    ) as traffic:
        gates = [ErrorRate(0.02, min_requests=100), Latency(0.2), SampleRatio()]
        run = ep.canary("v2", steps=(25, 50, 100), interval="4s", gates=gates, max_inconclusive=4)
        run.wait()
        after = _grows(traffic)
    history = run.history
    records = history.to_dict("records")
    assert run.outcome == "promoted", records
    passed = history[history["verdict"] == "pass"]
    assert list(passed["weight"]) == [25, 50], records
    # No journal to read (no process behind the pods): Istio's buckets in Prometheus.
    assert all("Mann-Whitney on histogram buckets" in r for r in passed["reason"]), records
    assert route_weights(kube_emulator, name, routing) == {"v1": 0, "v2": 100}
    assert after == {"v2"}


@pytest.mark.parametrize("routing", ROUTINGS)
def test_a_bad_version_is_rolled_back_to_the_three_way_split(
    kube_emulator: KubeEmulator,
    istio_exporter: IstioExporter,
    istio_scraper: RunningPrometheus,
    routing: str,
) -> None:
    name = _name("bad", routing)
    target = _target(kube_emulator, istio_scraper, routing)
    _deploy(target, name, routing, "v1", "v2", "v3")
    ep = mlshift.endpoint(name, target=target)
    split = {"v1": 70, "v2": 30, "v3": 0}
    ep.shift(split)
    behaviour = {"v1": Behaviour(), "v2": Behaviour(), "v3": Behaviour(error_ratio=0.08)}
    with _traffic(
        kube_emulator,
        istio_exporter,
        istio_scraper,
        endpoint=name,
        routing=routing,
        behaviour=behaviour,
    ) as t:
        gates = [ErrorRate(0.005), Latency(0.2), SampleRatio()]
        run = ep.canary(
            "v3", steps=(50, 100), interval="4s", gates=gates, threshold=1, max_inconclusive=4
        )
        run.wait()
        after = _grows(t)
    records: list[dict[str, Any]] = run.history.to_dict("records")
    assert run.outcome.startswith("rolled back to v1 70 %, v2 30 %: error-rate: errors"), records
    # The split followed the weights: the canary's share of (canary + stable) as measured.
    # (Its p-value is not asserted on: counts from rate() are extrapolated to the window.)
    last = records[-1]
    assert last["sample-ratio"] != "invalid", records
    assert last["sample-ratio.expected_share"] == pytest.approx(50 / 85)
    assert abs(last["sample-ratio.observed_share"] - 50 / 85) < 0.06, records
    assert route_weights(kube_emulator, name, routing) == split
    ep.status()  # read again: the run shifted through a handle of its own
    assert ep.weights == split
    assert after == {"v1", "v2"}
