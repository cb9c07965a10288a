"""``Endpoint`` and ``Version`` reprs: short text, escaped HTML, coloured weight bars, no I/O.

Two tiny real targets fill the engine seam: ``OfflineTarget`` has no engine at all (calling
``engine()`` is counted and raises, as an unreachable cluster would), so dry-run deploys
build the state in memory and any repr that reached for the target would be caught;
``HostileTarget`` reports a version whose readiness reason and image carry markup.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift._bundle_info import BundleInfo
from mlshift._colors import version_color
from mlshift._engine import VersionStatus
from mlshift._state import EndpointState, VersionSpec
from tests.unit.memory import MemoryEngine, MemoryTarget

SCRIPT = "<script>alert('x')</script>"


class OfflineTarget(MemoryTarget):
    """A target whose cluster cannot be reached: every ``engine()`` call is counted."""

    name = "offline"

    def __init__(self) -> None:
        super().__init__()
        self.engine_calls = 0

    def engine(self, endpoint: str) -> MemoryEngine:
        self.engine_calls += 1
        raise mlshift.ConfigError("no cluster here; reprs must not ask for one")

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        image = f"registry.example.com/ml/{endpoint}@sha256:{'a' * 64}"
        return VersionSpec(version, model_sha256=bundle.sha256, image=image)


class HostileEngine(MemoryEngine):
    """Reports every version but v1 not ready, with markup in the reason."""

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        return {
            v: VersionStatus(v, v == "v1", int(state.traffic.weights.get(v, 0)), reason=SCRIPT)
            for v in state.version_names
            if versions is None or v in versions
        }


class HostileTarget(OfflineTarget):
    name = "hostile"

    def __init__(self) -> None:
        super().__init__()
        self._engine = HostileEngine()

    def engine(self, endpoint: str) -> HostileEngine:
        self.engine_calls += 1
        return self._engine

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        return VersionSpec(version, model_sha256=bundle.sha256, image=f"reg/x:{version}{SCRIPT}")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[BundleInfo]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = (X[:, 1] > 0).astype(int)
    root: Path = tmp_path_factory.mktemp("bundles")
    return [
        mlshift.bundle(LogisticRegression(C=c).fit(X, y), f"v{i}", path=root / f"v{i}")
        for i, c in ((1, 1.0), (2, 0.3))
    ]


@pytest.fixture
def offline(bundles: list[BundleInfo]) -> tuple[mlshift.Endpoint, OfflineTarget]:
    target = OfflineTarget()
    ep = mlshift.Endpoint("churn", target)
    ep.deploy(bundles[0], "v1", dry_run=True)
    ep.deploy(bundles[1], "v2", dry_run=True)
    ep.shift({"v1": 90, "v2": 10}, dry_run=True)
    return ep, target


def test_reprs_read_the_cache_only(offline: tuple[mlshift.Endpoint, OfflineTarget]) -> None:
    ep, target = offline
    calls = target.engine_calls
    assert repr(ep) == "<Endpoint churn on offline (dry run): v1=90, v2=10>"
    assert repr(ep.versions["v2"]) == "<Version v2 10% unknown>"
    page = ep._repr_html_()
    version_page = ep.versions["v1"]._repr_html_()
    assert "v1" in page and "v2" in page and "registry.example.com/ml/churn@sha256:" in page
    assert "90%" in version_page
    assert target.engine_calls == calls  # no repr asked the target for anything


def test_weight_bars_are_drawn_in_each_version_colour(
    offline: tuple[mlshift.Endpoint, OfflineTarget],
) -> None:
    ep, _ = offline
    page = ep._repr_html_()
    bars = dict(re.findall(r'background:(#[0-9A-Fa-f]{6});height:[^"]*?width:(\d+)%', page))
    assert bars == {version_color("v1"): "90", version_color("v2"): "10"}
    assert version_color("v1") != version_color("v2")
    assert f'<b style="color:{version_color("v2")}">v2</b>' in page


def test_an_endpoint_with_no_versions_says_so() -> None:
    ep = mlshift.Endpoint("empty", OfflineTarget())
    assert repr(ep) == "<Endpoint empty on offline: no versions>"
    assert "no versions deployed" in ep._repr_html_()


def test_reasons_and_images_are_escaped(bundles: list[BundleInfo]) -> None:
    ep = mlshift.Endpoint("churn", HostileTarget())
    ep.deploy(bundles[0], "v1")
    ep.deploy(bundles[1], "v2")
    ep.status()
    for page in (ep._repr_html_(), ep.versions["v2"]._repr_html_()):
        assert "<script>" not in page
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "not ready" in ep.versions["v2"]._repr_html_()


def test_a_version_built_by_hand_is_escaped_too() -> None:
    version = mlshift.Version("v3", 0, False, "f" * 64, reason=f"CrashLoopBackOff: {SCRIPT}")
    page = version._repr_html_()
    assert "<script>" not in page and "CrashLoopBackOff: &lt;script&gt;" in page
    assert "sha256:ffffffffffff" in page
    assert repr(version) == "<Version v3 0% not ready>"
