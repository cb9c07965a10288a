"""What ``ep.metrics()`` and ``ep.plot()`` show on the local mesh is what the router served.

Real Envoy, real model servers, the facade's reading verbs. Covers: a fresh endpoint's first
requests appear at the default step (they used to vanish: only the last read of each step
bucket was kept, so the zero baseline went); traffic served while no process sampled is
counted in full once a process reads again; a split change under steady traffic shows each
version's served share per interval, both versions drawn.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import mlshift
from tests.fixtures.local import hit

pytestmark = pytest.mark.slow


def test_a_fresh_endpoints_first_requests_show_at_the_default_step(
    mesh_factory: Any, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1")
    assert hit(mesh.url, 40)[1] == Counter({200: 40})
    ep = mlshift.Endpoint("churn", mesh.target)
    for _ in range(3):  # and it stays true as time goes by
        frame = ep.metrics(since="2m")  # the default step, 10 s
        assert frame["requests"].sum() == 40
        time.sleep(1.0)
    assert ep.metrics(since="2m", step="1s")["requests"].sum() == 40


def test_traffic_served_while_nobody_sampled_is_counted_in_full(
    mesh_factory: Any, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    mesh.traffic({"v1": 70, "v2": 30})
    mesh.engine.sampling.stop()  # as if no Python process were attached
    seen, codes = hit(mesh.url, 140)
    assert codes == Counter({200: 140})
    time.sleep(2.5)
    frame = mlshift.Endpoint("churn", mesh.target).metrics(since="1m")
    served = frame.groupby("version")["requests"].sum().to_dict()
    assert served == {"v1": seen["v1"], "v2": seen["v2"]}


def test_the_plot_shows_each_versions_served_share_per_interval(
    mesh_factory: Any, local_bundle: Path
) -> None:
    from matplotlib.lines import Line2D

    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    ep = mlshift.Endpoint("churn", mesh.target)
    mesh.traffic({"v1": 80, "v2": 20})
    hit(mesh.url, 400)
    time.sleep(1.2)
    mesh.traffic({"v1": 50, "v2": 50})
    hit(mesh.url, 400)
    frame = ep.metrics(since="1m", step="2s")
    busy = frame[frame["requests"] > 50]
    assert set(busy["version"]) == {"v1", "v2"}
    assert busy.groupby("timestamp")["share"].sum().round(6).eq(1.0).all()
    figure = ep.plot(since="1m", step="2s")
    share_axes = figure.axes[0]
    lines = {str(line.get_label()): line for line in share_axes.get_lines()}
    assert {"v1", "v2"} <= set(lines)
    for line in (lines["v1"], lines["v2"]):
        assert isinstance(line, Line2D) and line.get_marker() == "o"  # one point still shows


def test_a_window_from_a_checkpoint_counts_only_what_came_after_it(
    mesh_factory: Any, local_bundle: Path
) -> None:
    # The canary's looks start at a checkpoint. Without it a look counted from the read
    # before, up to a second older, and the stable-only traffic since as the step's: a
    # false sample-ratio mismatch (CI saw one).
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    mesh.traffic({"v1": 100, "v2": 0})
    ep = mlshift.Endpoint("churn", mesh.target)
    ep.shift({"v1": 50, "v2": 50})
    mesh.engine.sampling.stop()  # a shift restarts it: its next read is a second away
    ep.shift({"v1": 100, "v2": 0})
    ep.metrics(since="1m")  # a read now, then traffic the window must not count
    before, _ = hit(mesh.url, 60)
    assert before == Counter({"v1": 60})
    ep.shift({"v1": 50, "v2": 50})
    start = ep.checkpoint()
    seen, codes = hit(mesh.url, 60)
    assert codes == Counter({200: 60}) and seen["v2"] > 0
    frame = ep.metrics(since=time.time() - start, step="1h")
    served = frame.groupby("version")["requests"].sum().to_dict()
    assert served == {"v1": seen["v1"], "v2": seen["v2"]}
