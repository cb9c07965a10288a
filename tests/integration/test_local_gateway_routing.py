"""The local mesh routed from an HTTPRoute behaves as routed from a VirtualService.

The same tests run on both routings against a real Envoy and real model_server processes:
the observed split at 90/10 (within 3 points over 2,000 requests), a header rule (exact),
a mirror observed at its percent (within 4 points over 2,000), version-pinned paths, and
removing a version.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlshift._state import HeaderRoute, Mirror, TrafficState
from mlshift.local import Local
from tests.fixtures.local import Mesh, hit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["istio", "gateway-api"])
def mesh2(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, local_bundle: Path
) -> Iterator[Mesh]:
    """Versions v1 and v2 of ``churn``, routed as the parameter says."""
    target = Local(tmp_path_factory.mktemp("mesh2-home"), routing=request.param)
    mesh = Mesh(target, "churn")
    try:
        mesh.deploy(local_bundle, "v1", "v2")
        yield mesh
    finally:
        with contextlib.suppress(Exception):
            mesh.delete()
        mesh.kill_everything()


def _completed(mesh: Mesh, version: str) -> int:
    stat = f"cluster.churn_{version}.upstream_rq_completed"
    return int(mesh.engine.router.stats(f"^{stat}$").get(stat) or 0)


def test_the_objects_are_the_routings_own(mesh2: Mesh) -> None:
    assert mesh2.state is not None
    routing = mesh2.state.routing
    stored = {k: mesh2.engine.files.stored(k) for k in ("VirtualService", "HTTPRoute")}
    assert (stored["HTTPRoute"] is not None) == (routing == "gateway-api")
    assert (stored["VirtualService"] is not None) == (routing == "istio")


def test_split_at_90_10_within_3_points(mesh2: Mesh) -> None:
    mesh2.traffic({"v1": 90, "v2": 10})
    seen, codes = hit(mesh2.url, 2000)
    assert codes == Counter({200: 2000})
    assert abs(100.0 * seen["v2"] / 2000 - 10) <= 3.0, seen


def test_header_rule_is_exact(mesh2: Mesh) -> None:
    rule = HeaderRoute(version="v2", header="X-Canary", value="yes")
    mesh2.traffic({"v1": 100, "v2": 0}, headers=(rule,))
    assert hit(mesh2.url, 300, headers={"x-canary": "yes"})[0] == Counter({"v2": 300})
    assert hit(mesh2.url, 300, headers={"x-canary": "yes-but"})[0] == Counter({"v1": 300})
    assert hit(mesh2.url, 300)[0] == Counter({"v1": 300})


def test_mirror_observed_at_its_percent(mesh2: Mesh) -> None:
    assert mesh2.state is not None
    mirrored = TrafficState({"v1": 100, "v2": 0}, mirror=Mirror("v2", 30.0))
    mesh2._apply(mesh2.state.with_traffic(mirrored))
    before = _completed(mesh2, "v2")
    assert hit(mesh2.url, 2000) == (Counter({"v1": 2000}), Counter({200: 2000}))
    deadline = time.monotonic() + 5.0
    copies = previous = -1
    while time.monotonic() < deadline:  # until the mirrored copies stop arriving
        copies = _completed(mesh2, "v2") - before
        if copies == previous:
            break
        previous = copies
        time.sleep(0.2)
    # Each request is mirrored with probability 0.3: one standard deviation is 1.02 points
    # at 2,000 requests, so 4 points is about 4 sigma (3 points failed about once in 300).
    assert abs(100.0 * copies / 2000 - 30.0) <= 4.0, copies
    mesh2.traffic({"v1": 100, "v2": 0})


def test_version_pinned_paths_and_removing_a_version(mesh2: Mesh) -> None:
    mesh2.traffic({"v1": 0, "v2": 100})
    path = "/v2/models/churn/versions/v1/ready"
    assert hit(mesh2.url, 50, path=path) == (Counter({"v1": 50}), Counter({200: 50}))
    mesh2.remove("v1")
    assert hit(mesh2.url, 100) == (Counter({"v2": 100}), Counter({200: 100}))
    assert hit(mesh2.url, 20, path=path)[1] == Counter({404: 20})
