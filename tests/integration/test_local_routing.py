"""Local mesh routing against a real Envoy and real model_server processes.

Covers: the observed split at 90/10, 50/50 and 60/30/10 (within 3 points over thousands of
requests), header rules beating weights, five shifts under continuous traffic without a single
non-2xx, invalid routes refused with routing and stored state unchanged (also after another
engine's refused routes, which must not be taken for the next change's), a plan computed from
routes another engine changed since refused (``ConflictError``) and two engines changing the
traffic at once keeping both changes, reattaching from a second Python process, and
per-version metrics read from Envoy's stats.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from mlshift._exceptions import ConflictError, RoutingError
from mlshift._plan import Plan, Step, plan_change
from mlshift._render import managed_routes
from mlshift._state import HeaderRoute, Mirror, TrafficState, VersionSpec
from mlshift.local import LocalEngine
from tests.fixtures.local import Mesh, hit, replace_weights

pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _assert_split(seen: Counter[str], weights: dict[str, int], n: int) -> None:
    assert sum(seen.values()) == n
    for version, weight in weights.items():
        share = 100.0 * seen[version] / n
        assert abs(share - weight) <= 3.0, f"{version}: {share:.1f} % observed, {weight} % set"


@pytest.mark.parametrize(
    ("weights", "n"),
    [
        ({"v1": 90, "v2": 10, "v3": 0}, 2000),
        ({"v1": 50, "v2": 50, "v3": 0}, 3000),
        ({"v1": 60, "v2": 30, "v3": 10}, 3000),
    ],
    ids=["90-10", "50-50", "60-30-10"],
)
def test_observed_split_follows_weights(mesh3: Mesh, weights: dict[str, int], n: int) -> None:
    mesh3.traffic(weights)
    seen, codes = hit(mesh3.url, n)
    assert codes == Counter({200: n})
    _assert_split(seen, weights, n)


def test_header_rule_beats_weights(mesh3: Mesh) -> None:
    rule = HeaderRoute(version="v3", header="X-Canary", value="yes")
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0}, headers=(rule,))
    with_header, _ = hit(mesh3.url, 200, headers={"x-canary": "yes"})
    without, _ = hit(mesh3.url, 200, headers={"x-canary": "no"})
    assert with_header == Counter({"v3": 200})
    assert without == Counter({"v1": 200})
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    assert hit(mesh3.url, 50, headers={"x-canary": "yes"})[0] == Counter({"v1": 50})


def test_version_pinned_paths_reach_their_version_whatever_the_weights(mesh3: Mesh) -> None:
    import tritonclient.http as triton

    mesh3.traffic({"v1": 0, "v2": 100, "v3": 0})
    for version in ("v1", "v3"):
        seen, codes = hit(mesh3.url, 60, path=f"/v2/models/churn/versions/{version}/ready")
        assert (seen, codes) == (Counter({version: 60}), Counter({200: 60}))
    # Without a version in the path, requests keep following the weights.
    assert hit(mesh3.url, 60, path="/v2/models/churn/ready")[0] == Counter({"v2": 60})
    body = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    answer = httpx.post(f"{mesh3.url}/v2/models/churn/versions/v1/infer", json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-mlshift-version"] == "v1"
    # A third-party client naming the version gets that version, at 0 % of the weights.
    client = triton.InferenceServerClient(url=mesh3.url.removeprefix("http://"))
    try:
        assert client.is_model_ready("churn", "v3")
        assert client.get_model_metadata("churn", "v3")["versions"] == ["v3"]
        tensor = triton.InferInput("input-0", [2, 2], "FP64")
        tensor.set_data_from_numpy(np.array([[1.0, 2.0], [3.0, 4.0]]))
        result = client.infer("churn", [tensor], model_version="v1")
        assert result.get_response()["model_version"] == "v1"
    finally:
        client.close()


def _assert_unchanged(mesh: Mesh) -> None:
    assert mesh.state is not None
    loaded = mesh.engine.load("churn")
    assert loaded is not None
    assert loaded[0] == mesh.state
    assert hit(mesh.url, 100)[0] == Counter({"v2": 100})


def test_routes_envoy_rejects_leave_routing_unchanged(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 0, "v2": 100, "v3": 0})
    assert mesh3.state is not None
    # All-zero weights get past a caller that skipped validation; Envoy itself refuses them.
    zero = replace_weights(mesh3.state, {"v1": 0, "v2": 0, "v3": 0})
    with pytest.raises(RoutingError, match="Sum of weights"):
        mesh3.engine.execute(plan_change(mesh3.state, zero))
    _assert_unchanged(mesh3)
    # A header regex RE2 cannot compile.
    bad = mesh3.state.with_traffic(
        TrafficState(dict(mesh3.state.traffic.weights), (HeaderRoute("v1", "x-a", "(", "regex"),))
    )
    with pytest.raises(RoutingError, match="rejected"):
        mesh3.engine.execute(plan_change(mesh3.state, bad))
    _assert_unchanged(mesh3)


def test_another_engines_rejected_routes_do_not_fail_the_next_change(mesh3: Mesh) -> None:
    # The router remembers Envoy's rejection counter from its last read instead of asking
    # before each write; a rejection by another process in between must not be taken for
    # this engine's own.
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    other = LocalEngine("churn", mesh3.target.home)  # another notebook on the same mesh
    try:
        loaded = other.load("churn")
        assert loaded is not None
        zero = replace_weights(loaded[0], {"v1": 0, "v2": 0, "v3": 0})
        with pytest.raises(RoutingError, match="Sum of weights"):
            other.execute(plan_change(loaded[0], zero))
    finally:
        other.close()
    mesh3.traffic({"v1": 0, "v2": 100, "v3": 0})
    assert hit(mesh3.url, 50)[0] == Counter({"v2": 50})
    # And its own rejected change is still reported, with Envoy's reason.
    assert mesh3.state is not None
    zero = replace_weights(mesh3.state, {"v1": 0, "v2": 0, "v3": 0})
    with pytest.raises(RoutingError, match="Sum of weights"):
        mesh3.engine.execute(plan_change(mesh3.state, zero))
    assert hit(mesh3.url, 50)[0] == Counter({"v2": 50})


def test_routes_to_unknown_version_refused(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 0, "v2": 100, "v3": 0})
    assert mesh3.state is not None
    ghost = mesh3.state.with_version(VersionSpec("v9", bundle="/nowhere"))
    ghost = replace_weights(ghost, {"v1": 0, "v2": 50, "v3": 0, "v9": 50})
    routes_only = Plan(
        ghost, (Step("patch-routes", "VirtualService", "churn", {"http": managed_routes(ghost)}),)
    )
    with pytest.raises(RoutingError, match="'v9'"):
        mesh3.engine.execute(routes_only)
    _assert_unchanged(mesh3)


def test_plan_from_routes_changed_since_is_a_conflict(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    stale = mesh3.state
    assert stale is not None
    other = LocalEngine("churn", mesh3.target.home)  # another notebook on the same mesh
    try:
        loaded = other.load("churn")
        assert loaded is not None
        state, history = loaded
        moved = replace_weights(state, {"v1": 50, "v2": 50, "v3": 0})
        other.execute(plan_change(state, moved, history=(*history, state.traffic)))
        late = replace_weights(stale, {"v1": 0, "v2": 0, "v3": 100})
        with pytest.raises(ConflictError, match="changed since they were read.*try again"):
            mesh3.engine.execute(plan_change(stale, late))
        after = mesh3.engine.load("churn")
        assert after is not None and after[0] == moved
        seen, codes = hit(mesh3.url, 1000)
        assert codes == Counter({200: 1000})
        assert set(seen) == {"v1", "v2"} and seen["v1"] > 400 and seen["v2"] > 400
    finally:
        other.close()
    mesh3.state, mesh3.history = after
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})  # re-read: now it goes through
    assert hit(mesh3.url, 50)[0] == Counter({"v1": 50})


def test_two_engines_changing_traffic_at_once_keep_both_changes(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    rule = HeaderRoute(version="v3", header="x-canary", value="yes")
    engines = [LocalEngine("churn", mesh3.target.home) for _ in range(2)]
    start = threading.Barrier(2)

    def change(engine: LocalEngine, edit: Callable[[TrafficState], TrafficState]) -> None:
        start.wait()
        for _ in range(10):  # what the facade does: re-read and recompute, a bounded number
            loaded = engine.load("churn")
            assert loaded is not None
            state, history = loaded
            new = state.with_traffic(edit(state.traffic))
            try:
                engine.execute(plan_change(state, new, history=(*history, state.traffic)))
                return
            except ConflictError:
                continue
        raise AssertionError("ten conflicts in a row")

    edits: list[Callable[[TrafficState], TrafficState]] = [
        lambda t: dataclasses.replace(t, weights={"v1": 20, "v2": 80, "v3": 0}),
        lambda t: dataclasses.replace(t, headers=(*t.headers, rule)),
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(change, e, f) for e, f in zip(engines, edits, strict=True)]:
                future.result(timeout=60)
    finally:
        for engine in engines:
            engine.close()
    loaded = mesh3.engine.load("churn")
    assert loaded is not None
    state, history = loaded
    assert dict(state.traffic.weights) == {"v1": 20, "v2": 80, "v3": 0}
    assert state.traffic.headers == (rule,)
    assert hit(mesh3.url, 50, headers={"x-canary": "yes"})[0] == Counter({"v3": 50})
    assert set(hit(mesh3.url, 200)[0]) == {"v1", "v2"}
    mesh3.state, mesh3.history = state, history
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})


def test_five_shifts_under_traffic_lose_no_request(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    codes: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def post_load() -> None:
        deadline = time.monotonic() + 30.0
        with httpx.Client(base_url=mesh3.url, timeout=10.0, trust_env=False) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                r = client.post("/v1/models/churn:predict", json={"instances": [[1.0, 2.0]]})
                codes[r.status_code] += 1
                versions[r.headers.get("x-mlshift-version", "")] += 1

    workers = [threading.Thread(target=post_load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        for weights in (
            {"v1": 80, "v2": 20, "v3": 0},
            {"v1": 50, "v2": 50, "v3": 0},
            {"v1": 0, "v2": 100, "v3": 0},
            {"v1": 0, "v2": 50, "v3": 50},
            {"v1": 100, "v2": 0, "v3": 0},
        ):
            mesh3.traffic(weights)
            time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert sum(codes.values()) > 200
    assert set(codes) == {200}, f"non-2xx answers under shifts: {codes}"
    assert {"v1", "v2", "v3"} <= set(versions)


def test_reattach_from_second_process(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    home = str(mesh3.target.home)
    code = f"""
import json
from mlshift.local import Local
from mlshift._plan import plan_change
from mlshift._state import TrafficState
engine = Local({home!r}).engine("churn")
state, history = engine.load("churn")
new = state.with_traffic(TrafficState({{"v1": 0, "v2": 0, "v3": 100}}))
engine.execute(plan_change(state, new, history=(*history, state.traffic)))
status = engine.status(new)
print(json.dumps({{"url": engine.url(new), "ready": {{v: s.ready for v, s in status.items()}},
                  "pids": engine.pids()}}))
engine.close()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["url"] == mesh3.url
    assert report["ready"] == {"v1": True, "v2": True, "v3": True}
    assert report["pids"] == mesh3.engine.pids()
    assert hit(mesh3.url, 100)[0] == Counter({"v3": 100})
    loaded = mesh3.engine.load("churn")
    assert loaded is not None
    state, history = loaded
    assert dict(state.traffic.weights) == {"v1": 0, "v2": 0, "v3": 100}
    assert history[-1].weights == {"v1": 100, "v2": 0, "v3": 0}
    mesh3.state, mesh3.history = state, history


def test_metrics_per_version_from_envoy_stats(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 50, "v2": 50, "v3": 0})
    assert mesh3.state is not None
    time.sleep(1.2)  # let the interval holding earlier tests' traffic close
    mesh3.engine.sample()
    started = time.time()
    hit(mesh3.url, 400)
    # Envoy counts at once but merges histograms at each 1 s stats flush (later on a loaded
    # machine), so wait until the latencies have arrived in some interval.
    deadline = time.monotonic() + 10.0
    while True:
        time.sleep(0.5)
        frame = mesh3.engine.metrics(mesh3.state, since=time.time() - started, step=1.0)
        if not frame.p50_ms.dropna().empty or time.monotonic() > deadline:
            break
    totals = frame.groupby("version")["requests"].sum()
    assert totals["v1"] + totals["v2"] == 400
    assert abs(totals["v1"] - totals["v2"]) < 100
    assert totals.get("v3", 0.0) == 0.0
    busy = frame[frame.requests > 0]
    assert (busy.errors == 0).all()
    # An interval may hold requests whose latencies land in the next one.
    latencies = frame.p50_ms.dropna()
    assert not latencies.empty
    assert ((latencies > 0) & (latencies < 1000)).all()


def test_mirror_copies_requests_without_answering(mesh3: Mesh) -> None:
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
    assert mesh3.state is not None
    stat = "cluster.churn_v3.upstream_rq_completed"
    before = int(mesh3.engine.router.stats(f"^{stat}$").get(stat) or 0)
    mirrored = TrafficState({"v1": 100, "v2": 0, "v3": 0}, mirror=Mirror("v3", 100.0))
    mesh3._apply(mesh3.state.with_traffic(mirrored))
    assert hit(mesh3.url, 100) == (Counter({"v1": 100}), Counter({200: 100}))
    deadline = time.monotonic() + 5.0
    copies = 0
    while copies < 100 and time.monotonic() < deadline:
        copies = int(mesh3.engine.router.stats(f"^{stat}$").get(stat) or 0) - before
        time.sleep(0.05)
    assert copies == 100
    mesh3.traffic({"v1": 100, "v2": 0, "v3": 0})
