"""``frame_from_counters``: cumulative reads into the metrics frame, counting every request once.

Covers: the requests of a window add up to the counters' increase whatever the step (the old
per-bucket "last read wins" lost the first bucket's traffic); a long gap between reads (no
process sampling) is spread over the gap, not lost; a counter restart counts from zero; a
version appears from its first read on; shares per interval; latency quantiles per interval.
"""

from __future__ import annotations

import math

import pytest

from mlshift._frame import FRAME_COLUMNS, Snapshot, frame_from_counters

INF = math.inf


def _read(t: float, version: str, requests: float, errors: float = 0.0) -> Snapshot:
    return Snapshot(t, version, requests, errors, ((5.0, requests), (INF, requests)))


@pytest.mark.parametrize("step", [1.0, 7.0, 10.0, 60.0, 120.0])
def test_a_window_counts_every_request_once_whatever_the_step(step: float) -> None:
    # A fresh version (zero counts at deploy), 40 requests within its first ten seconds.
    reads = [_read(1000.0, "v1", 0), _read(1004.0, "v1", 25), _read(1008.0, "v1", 40)]
    reads += [_read(1009.0 + i, "v1", 40) for i in range(60)]
    frame = frame_from_counters(reads, start=950.0, end=1070.0, step=step)
    assert list(frame.columns) == FRAME_COLUMNS
    assert frame["requests"].sum() == 40
    assert (frame["requests"] == frame["requests"].round()).all()  # whole requests


@pytest.mark.parametrize("since", [3.4, 3.6, 45.0, 0.3])
def test_a_window_that_is_not_a_whole_number_of_steps_keeps_its_start(since: float) -> None:
    # Reads every 0.1 s (a sample taken just before the window opened), 10 requests per
    # read from the window's start on: rounding the window to whole steps used to drop its
    # first 0.4 s at since=3.4 (347 of 400 counted in a CI run).
    end = 2000.0
    start = end - since
    reads = [_read(start - 0.01, "v1", 0)]
    count = 0
    for i in range(1, int(since * 10) + 1):
        count += 10
        reads.append(_read(start + i * 0.1, "v1", count))
    frame = frame_from_counters(reads, start=start, end=end, step=1.0 if since < 10 else 10.0)
    assert frame["requests"].sum() == pytest.approx(count)


def test_traffic_between_reads_far_apart_is_spread_not_lost() -> None:
    # Nobody sampled for 100 s while 140 requests were served (at 1.4/s).
    reads = [_read(0.0, "v1", 0), _read(100.0, "v1", 140)]
    frame = frame_from_counters(reads, start=0.0, end=100.0, step=10.0)
    assert frame["requests"].sum() == 140
    assert frame["requests"].between(13, 15).all()
    # A window covering only the second half sees about half of them.
    half = frame_from_counters(reads, start=50.0, end=100.0, step=10.0)
    assert half["requests"].sum() == 70


def test_a_restart_counts_from_zero_again() -> None:
    reads = [_read(0.0, "v1", 100, 5), _read(10.0, "v1", 130, 6), _read(20.0, "v1", 12, 1)]
    frame = frame_from_counters(reads, start=0.0, end=20.0, step=10.0)
    assert frame["requests"].tolist() == [30.0, 12.0]
    assert frame["errors"].tolist() == [1.0, 1.0]


def test_versions_share_each_interval_and_appear_from_their_first_read() -> None:
    reads = []
    for i in range(0, 21):
        t = float(i)
        reads.append(_read(t, "v1", 8 * i))
        if i >= 10:
            reads.append(_read(t, "v2", 2 * (i - 10)))  # deployed at t=10
    frame = frame_from_counters(reads, start=0.0, end=20.0, step=5.0)
    v2 = frame[frame["version"] == "v2"]
    assert v2["timestamp"].min().timestamp() == 15.0  # no rows before it existed
    later = frame[frame["timestamp"].map(lambda ts: ts.timestamp()) > 10.0]
    shares = later.pivot(index="timestamp", columns="version", values="share")
    assert shares["v1"].tolist() == pytest.approx([0.8, 0.8])
    assert shares["v2"].tolist() == pytest.approx([0.2, 0.2])


def test_latency_quantiles_come_from_each_intervals_own_observations() -> None:
    slow = ((5.0, 0.0), (50.0, 10.0), (INF, 10.0))
    reads = [
        Snapshot(0.0, "v1", 0, 0, ((5.0, 0.0), (50.0, 0.0), (INF, 0.0))),
        Snapshot(10.0, "v1", 10, 0, ((5.0, 10.0), (50.0, 10.0), (INF, 10.0))),
        Snapshot(
            20.0,
            "v1",
            20,
            0,
            tuple(
                (b, c + f)
                for (b, c), (_, f) in zip(
                    ((5.0, 10.0), (50.0, 10.0), (INF, 10.0)), slow, strict=True
                )
            ),
        ),
    ]
    frame = frame_from_counters(reads, start=0.0, end=20.0, step=10.0)
    fast_p99, slow_p99 = frame["p99_ms"].tolist()
    assert fast_p99 <= 5.0 < slow_p99 <= 50.0


def test_no_reads_is_the_empty_frame() -> None:
    assert frame_from_counters([], start=0.0, end=60.0, step=10.0).empty
