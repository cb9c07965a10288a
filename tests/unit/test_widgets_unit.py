"""The traffic slider's logic without a kernel or a mesh: sliders, snap-back, buttons, thread.

The engine seam is filled by a small, real in-memory engine (``SwitchEngine``) whose versions
can be switched not-ready, whose router can be made to refuse changes, and whose metrics
and predictions reads can be held on an Event (a slow Prometheus), the way httpx tests plug a
transport in. tests/integration/test_widgets.py runs the same widget against the real local
mesh.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Collection

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift._bundle_info import BundleInfo
from mlshift._engine import VersionStatus
from mlshift._plan import Plan
from mlshift._prediction_stats import PredictionStats
from mlshift._state import EndpointState, VersionSpec
from mlshift._widgets import TrafficSlider, traffic_slider
from mlshift.metrics import empty_frame
from tests.unit.memory import MemoryEngine, MemoryTarget


class SwitchEngine(MemoryEngine):
    """A ``MemoryEngine`` whose router can refuse changes and whose reads can be held."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_routes = ""
        self.refusal: type[mlshift.RoutingError] = mlshift.RoutingError
        self.metric_reads = 0
        self.hold: threading.Event | None = None  # the read named by `held` waits for it
        self.held = "metrics"
        self.entered = threading.Event()

    def execute(self, plan: Plan) -> None:
        if self.refuse_routes and any(s.action == "patch-routes" for s in plan.steps):
            raise self.refusal(self.refuse_routes)
        super().execute(plan)

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        return {
            v: dataclasses.replace(s, reason="process exited (code -9)" if v in self.down else "")
            for v, s in super().status(state, versions).items()
        }

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        self.metric_reads += 1
        self._wait("metrics")
        return empty_frame()

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        self._wait("predictions")
        return []

    def _wait(self, read: str) -> None:
        if self.hold is not None and self.held == read:
            self.entered.set()
            self.hold.wait(timeout=30)  # the bound only keeps a broken test from hanging


class SwitchTarget(MemoryTarget):
    def engine(self, endpoint: str) -> SwitchEngine:
        engine = self.engines.setdefault(endpoint, SwitchEngine())
        assert isinstance(engine, SwitchEngine)
        return engine

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        return VersionSpec(version, model_sha256=bundle.sha256, bundle=str(bundle.path))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[BundleInfo]:
    """Three bundled models (bundled once: writing a bundle is the slow part of a deploy)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = (X[:, 0] > 0).astype(int)
    root = tmp_path_factory.mktemp("bundles")
    return [
        mlshift.bundle(LogisticRegression(C=c).fit(X, y), f"v{i}", path=root / f"v{i}")
        for i, c in enumerate((1.0, 0.5, 0.1), start=1)
    ]


def _endpoint(models: list[BundleInfo], n: int) -> mlshift.Endpoint:
    ep = mlshift.Endpoint("churn", SwitchTarget())
    for i in range(n):
        ep.deploy(models[i], f"v{i + 1}")
    return ep


def _engine(ep: mlshift.Endpoint) -> SwitchEngine:
    engine = ep.engine
    assert isinstance(engine, SwitchEngine)
    return engine


def test_two_versions_get_one_slider_for_the_newest_share(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ctl = TrafficSlider(ep)
    assert list(ctl.sliders) == ["v2"]
    slider = ctl.sliders["v2"]
    assert slider.value == 0 and slider.continuous_update is False
    slider.value = 30
    assert _engine(ep).state is not None
    assert dict(_engine(ep).state.traffic.weights) == {"v1": 70, "v2": 30}  # type: ignore[union-attr]
    assert "v1</b>&nbsp;70&nbsp;%" in ctl.status.value and " ms)" in ctl.status.value
    ctl.widget.close()


def test_three_sliders_stay_summing_to_100_pro_rata(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 3)
    ep.shift({"v1": 60, "v2": 20, "v3": 20})
    ctl = TrafficSlider(ep)
    ctl.sliders["v3"].value = 60
    assert {v: s.value for v, s in ctl.sliders.items()} == {"v1": 30, "v2": 10, "v3": 60}
    assert ep.history()[-1] == {"v1": 60, "v2": 20, "v3": 20}
    ctl.widget.close()


def test_refused_change_snaps_back_and_shows_the_escaped_error(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ctl = TrafficSlider(ep)
    _engine(ep).refuse_routes = "Envoy rejected <routes> & kept the old ones"
    ctl.sliders["v2"].value = 40
    assert ctl.sliders["v2"].value == 0
    assert "RoutingError" in ctl.status.value
    assert "&lt;routes&gt; &amp; kept" in ctl.status.value and "<routes>" not in ctl.status.value
    _engine(ep).refuse_routes = ""
    _engine(ep).down.add("v2")  # not ready: validation refuses before anything is sent
    ctl.sliders["v2"].value = 50
    assert ctl.sliders["v2"].value == 0 and "not ready" in ctl.status.value
    ctl.widget.close()


def test_a_conflict_snaps_back_and_is_shown(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ep.shift({"v1": 90, "v2": 10})
    ctl = TrafficSlider(ep)
    _engine(ep).refusal = mlshift.ConflictError
    _engine(ep).refuse_routes = "the VirtualService kept changing; re-read and try again"
    ctl.sliders["v2"].value = 40
    assert ctl.sliders["v2"].value == 10 and "ConflictError" in ctl.status.value
    ctl.promote_button.click()
    ctl.yes_button.click()
    assert ep.weights == {"v1": 90, "v2": 10} and ctl.sliders["v2"].value == 10
    assert "promote v2 was refused" in ctl.status.value and "ConflictError" in ctl.status.value
    ctl.widget.close()


# Metrics first, then predictions: the predictions read re-loads the state, so holding it
# leaves the refresh with weights read before the shift, which it must not show.
@pytest.mark.parametrize("held", ["metrics", "predictions"])
def test_the_slider_works_while_a_refresh_waits_for_a_read(
    models: list[BundleInfo], held: str
) -> None:
    ep = _endpoint(models, 2)
    ctl = TrafficSlider(ep)
    engine = _engine(ep)
    engine.held = held
    release = engine.hold = threading.Event()
    refresher = threading.Thread(target=ctl.refresh, daemon=True)
    slid = threading.Event()

    def slide() -> None:
        ctl.sliders["v2"].value = 30
        slid.set()

    try:
        refresher.start()
        assert engine.entered.wait(10), f"the refresh never read the {held}"
        threading.Thread(target=slide, daemon=True).start()
        # The refresh is still stuck in its read; the shift must not wait for it.
        assert slid.wait(10), f"the slider froze while the refresh waited for {held}"
        assert refresher.is_alive() and not release.is_set()
        assert dict(engine.state.traffic.weights) == {"v1": 70, "v2": 30}  # type: ignore[union-attr]
    finally:
        release.set()
    refresher.join(10)
    assert not refresher.is_alive() and ctl.refreshes == 1
    # That refresh began before the shift; it must not snap the slider back to v2=0.
    assert ctl.sliders["v2"].value == 30 and ep.weights == {"v1": 70, "v2": 30}
    assert "shift v2 to 30 %" in ctl.status.value
    assert "changed outside" not in ctl.status.value
    ctl.refresh()  # the next read sees the shift and agrees with it
    assert ctl.sliders["v2"].value == 30 and "changed outside" not in ctl.status.value
    ctl.widget.close()


def test_snap_back_follows_the_target_not_the_stale_cache(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ctl = TrafficSlider(ep)
    other = mlshift.Endpoint("churn", ep.target)  # someone else, e.g. another notebook
    other.shift({"v1": 80, "v2": 20})
    _engine(ep).down.add("v2")
    ctl.sliders["v2"].value = 90
    assert ctl.sliders["v2"].value == 20  # what is applied, not the 0 this widget last saw


def test_promote_and_rollback_only_act_after_yes(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ep.shift({"v1": 90, "v2": 10})
    ctl = TrafficSlider(ep)
    assert ctl.version_picker.value == "v2"
    ctl.promote_button.click()
    assert "Confirm promote v2?" in ctl.confirm_label.value
    assert ctl.confirm_box.layout.display == "flex"
    assert ep.history()[-1] == {"v1": 100, "v2": 0}  # nothing happened yet
    ctl.cancel_button.click()
    assert ctl.confirm_box.layout.display == "none" and ep.weights == {"v1": 90, "v2": 10}
    ctl.promote_button.click()
    ctl.yes_button.click()
    assert ep.weights == {"v1": 0, "v2": 100} and ctl.sliders["v2"].value == 100
    ctl.rollback_button.click()
    assert "Confirm roll back to" in ctl.confirm_label.value
    ctl.yes_button.click()
    assert ep.weights == {"v1": 90, "v2": 10} and ctl.sliders["v2"].value == 10
    ctl.widget.close()


def test_rollback_without_history_says_so(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    _engine(ep).history = ()  # e.g. an endpoint restored without its history
    ctl = TrafficSlider(ep)
    ctl.rollback_button.click()
    assert "nothing to roll back to" in ctl.status.value
    assert ctl.confirm_box.layout.display == "none"


def test_a_new_version_appears_on_refresh(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    ctl = TrafficSlider(ep)
    mlshift.Endpoint("churn", ep.target).deploy(models[2], "v3")
    ctl.refresh()
    assert list(ctl.sliders) == ["v1", "v2", "v3"]
    assert "changed outside this widget" in ctl.status.value and "v3</b>&nbsp;0" in ctl.status.value
    assert ctl.plot.value[:8] == b"\x89PNG\r\n\x1a\n" and ctl.refreshes == 1


def test_one_version_has_no_slider_and_no_actions(models: list[BundleInfo]) -> None:
    ctl = TrafficSlider(_endpoint(models, 1))
    assert ctl.sliders == {} and ctl.promote_button.disabled


def test_refresh_thread_starts_on_display_and_stops_on_close(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    widget = traffic_slider(ep, refresh=0.5)
    assert not widget.controller.running  # not displayed: no thread
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    thread = widget.controller._thread
    assert isinstance(thread, threading.Thread) and thread.daemon and thread.is_alive()
    widget.close()
    assert not thread.is_alive() and not widget.controller.running
    reads = _engine(ep).metric_reads
    widget.controller.start()  # closed widgets stay stopped
    assert not widget.controller.running and _engine(ep).metric_reads == reads
    assert "closed" in repr(widget)


def test_stop_ends_the_thread_and_keeps_the_controls(models: list[BundleInfo]) -> None:
    ep = _endpoint(models, 2)
    widget = traffic_slider(ep, refresh=0.5)
    widget.start()
    thread = widget.controller._thread
    widget.stop()
    assert thread is not None and not thread.is_alive()
    widget.controller.sliders["v2"].value = 25
    assert ep.weights == {"v1": 75, "v2": 25}


def test_bad_refresh_interval_is_refused(models: list[BundleInfo]) -> None:
    with pytest.raises(ValueError, match="at least 0.5 s"):
        traffic_slider(_endpoint(models, 1), refresh=0.1)


def test_missing_ipywidgets_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"  # what an uninstalled package does
        "from mlshift._widgets import traffic_slider\n"
        "try:\n    traffic_slider(None)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.startswith("ConfigError") and "pip install 'mlshift[notebook]'" in out


def test_close_closes_every_part(models: list[BundleInfo]) -> None:
    widget = traffic_slider(_endpoint(models, 3))
    ctl = widget.controller
    parts = [ctl.title, ctl.plot, ctl.yes_button, ctl.version_picker, *ctl.sliders.values()]
    assert all(p.comm is not None for p in parts)
    widget.close()
    assert all(p.comm is None for p in parts) and widget.comm is None
