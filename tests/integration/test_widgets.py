"""The traffic slider against a real local mesh (Envoy + model_server processes), no kernel.

Setting a slider's value must change the weights Envoy routes by, as a fresh ``Endpoint``
(another notebook) reads them; a change the target refuses (a version whose process was
killed) must snap back and show why; Promote and Roll back act only after Yes; the refresh
thread draws real metrics and is gone after ``close()``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

import mlshift
from mlshift._bundle import BundleInfo
from mlshift._widgets import TrafficSlider, traffic_slider
from mlshift.local import Local

pytestmark = pytest.mark.slow

X = np.random.default_rng(7).normal(size=(400, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[BundleInfo]:
    root = tmp_path_factory.mktemp("bundles")
    models = [LogisticRegression().fit(X, Y), DecisionTreeClassifier(max_depth=3).fit(X, Y)]
    return [
        mlshift.bundle(model, f"v{i}", sample=X[:5], path=root / f"v{i}")
        for i, model in enumerate(models, start=1)
    ]


def _mesh(name: str, home: Path, bundles: list[BundleInfo]) -> Iterator[mlshift.Endpoint]:
    ep = mlshift.Endpoint(name, Local(state_dir=home))
    try:
        ep.deploy(bundles[0], "v1")
        ep.deploy(bundles[1], "v2")
        yield ep
    finally:
        pids = ep.engine.pids()  # type: ignore[attr-defined]
        ep.delete()
        assert not [p for p in pids.values() if _alive(p)], "the mesh left processes running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlshift-home")


@pytest.fixture(scope="module")
def ep(home: Path, bundles: list[BundleInfo]) -> Iterator[mlshift.Endpoint]:
    yield from _mesh("churn", home, bundles)


@pytest.fixture
def fresh_split(ep: mlshift.Endpoint) -> mlshift.Endpoint:
    """Every test starts from v1=100, v2=0 with both versions ready."""
    ep.shift({"v1": 100, "v2": 0})
    assert ep.status()["ready"].all()
    return ep


def _applied(home: Path, name: str = "churn") -> dict[str, int]:
    """The weights as a new Endpoint (another notebook, another process) reads them."""
    status = mlshift.Endpoint(name, Local(state_dir=home)).status()
    return {str(v): int(w) for v, w in status["weight"].items()}


def test_moving_the_slider_shifts_the_real_mesh(fresh_split: mlshift.Endpoint, home: Path) -> None:
    ep = fresh_split
    ctl = TrafficSlider(ep)
    ctl.sliders["v2"].value = 30
    assert _applied(home) == {"v1": 70, "v2": 30}
    assert "shift v2 to 30 %" in ctl.status.value and "RoutingError" not in ctl.status.value
    # Envoy routes by it: 400 requests, expected v2 share 0.30 (sd 0.023); ±0.12 is > 5 sd.
    share = ep.send(X, rps=200, duration="2s").wait().summary()["share"]
    assert abs(share.get("v2", 0.0) - 0.30) < 0.12
    ctl.widget.close()


def test_promote_and_rollback_buttons_act_after_confirmation(
    fresh_split: mlshift.Endpoint, home: Path
) -> None:
    ep = fresh_split
    ep.shift({"v1": 80, "v2": 20})
    ctl = TrafficSlider(ep)
    ctl.promote_button.click()
    assert _applied(home) == {"v1": 80, "v2": 20}  # asked, not done
    assert "Confirm promote v2?" in ctl.confirm_label.value
    ctl.yes_button.click()
    assert _applied(home) == {"v1": 0, "v2": 100} and ctl.sliders["v2"].value == 100
    ctl.rollback_button.click()
    ctl.cancel_button.click()
    assert _applied(home) == {"v1": 0, "v2": 100}
    ctl.rollback_button.click()
    ctl.yes_button.click()
    assert _applied(home) == {"v1": 80, "v2": 20} and ctl.sliders["v2"].value == 20
    ctl.widget.close()


def test_refresh_thread_draws_live_metrics_and_stops_on_close(
    fresh_split: mlshift.Endpoint,
) -> None:
    ep = fresh_split
    ep.shift({"v1": 50, "v2": 50})
    run = ep.send(X, rps=100, duration="4s")
    widget = traffic_slider(ep, refresh=0.5, since="30s")
    widget._repr_mimebundle_()  # what displaying it does
    ctl = widget.controller
    deadline = time.monotonic() + 20
    while ctl.refreshes < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    run.stop()
    assert ctl.refreshes >= 2 and bytes(ctl.plot.value).startswith(b"\x89PNG")
    assert "plots updated" in ctl.plot_status.value
    thread = ctl._thread
    assert thread is not None and thread.is_alive()
    widget.close()
    assert not thread.is_alive()
    drawn = ctl.refreshes
    time.sleep(1.2)
    assert ctl.refreshes == drawn


def _gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} still runs {timeout} s after SIGKILL")


def test_a_killed_version_snaps_back_and_shows_why(home: Path, bundles: list[BundleInfo]) -> None:
    for ep in _mesh("churn-kill", home, bundles):  # its own endpoint: v2 does not come back
        ctl = TrafficSlider(ep)
        pid = ep.engine.pids()["v2"]  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        _gone(pid)  # the signal is delivered asynchronously: the version is dead once it exits
        ctl.sliders["v2"].value = 50
        assert ctl.sliders["v2"].value == 0
        assert "InvalidWeightsError" in ctl.status.value and "not ready" in ctl.status.value
        assert _applied(home, "churn-kill") == {"v1": 100, "v2": 0}
        assert ep.versions["v2"].ready is False and ep.versions["v2"].reason
        ctl.widget.close()
