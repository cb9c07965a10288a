"""The metrics frame: columns and dtypes, PromQL-style histogram quantiles, snapshot diffing."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlshift._frame import normalize_frame
from mlshift.metrics import (
    FRAME_COLUMNS,
    Snapshot,
    empty_frame,
    frame_from_snapshots,
    histogram_quantile,
)

INF = math.inf
BOUNDS = (5.0, 10.0, 25.0, 50.0, INF)


def hist(*per_bucket: float) -> tuple[tuple[float, float], ...]:
    """Cumulative buckets over BOUNDS from per-bucket (non-cumulative) counts."""
    out, total = [], 0.0
    for bound, n in zip(BOUNDS, per_bucket, strict=True):
        total += n
        out.append((bound, total))
    return tuple(out)


def test_frame_columns_are_the_design_contract_plus_share_and_mesh_errors() -> None:
    assert FRAME_COLUMNS == [
        "timestamp", "version", "requests", "rps", "errors", "error_rate",
        "p50_ms", "p95_ms", "p99_ms", "share", "mesh_errors",
    ]  # fmt: skip


def test_empty_frame_has_columns_and_dtypes() -> None:
    df = empty_frame()
    assert list(df.columns) == FRAME_COLUMNS
    assert len(df) == 0
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert pd.api.types.is_string_dtype(df["version"])
    for col in FRAME_COLUMNS[2:]:
        assert df[col].dtype == "float64", col


def test_empty_frame_is_a_fresh_object_each_time() -> None:
    a = empty_frame()
    a["extra"] = []
    assert "extra" not in empty_frame().columns


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 10.0 + 15.0 * (1.5 / 8.0)),  # rank 6.5 falls in (10, 25] holding 8
        (0.25, 5.0 + 5.0 * (1.25 / 3.0)),  # rank 3.25 falls in (5, 10] holding 3
        (0.1, 5.0 * (1.3 / 2.0)),  # the first bucket starts at 0
        (1.0, 25.0),
        (0.0, 0.0),
    ],
)
def test_histogram_quantile_interpolates_linearly(q: float, expected: float) -> None:
    buckets = [(5.0, 2.0), (10.0, 5.0), (25.0, 13.0), (INF, 13.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_known_values() -> None:
    buckets = [(10.0, 50.0), (25.0, 95.0), (50.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(10.0)
    assert histogram_quantile(0.95, buckets) == pytest.approx(25.0)
    assert histogram_quantile(0.99, buckets) == pytest.approx(45.0)
    # first bucket starts at 0
    assert histogram_quantile(0.1, buckets) == pytest.approx(2.0)


def test_histogram_quantile_in_inf_bucket_returns_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(10.0, 1.0), (25.0, 2.0), (INF, 10.0)]) == 25.0


def test_histogram_quantile_order_of_buckets_does_not_matter() -> None:
    buckets = [(INF, 10.0), (5.0, 4.0), (10.0, 8.0)]
    assert histogram_quantile(0.6, buckets) == pytest.approx(7.5)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(INF, 10.0)],  # fewer than two buckets
        [(5.0, 3.0), (10.0, 5.0)],  # no +inf bucket
        [(5.0, 0.0), (INF, 0.0)],  # no observations
    ],
)
def test_histogram_quantile_nan_without_usable_data(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(histogram_quantile(0.5, buckets))


def test_histogram_quantile_out_of_range_q_like_promql() -> None:
    buckets = [(5.0, 3.0), (INF, 3.0)]
    assert histogram_quantile(-0.1, buckets) == -INF
    assert histogram_quantile(1.1, buckets) == INF
    assert math.isnan(histogram_quantile(math.nan, buckets))


def test_histogram_quantile_tolerates_non_monotonic_counts() -> None:
    # (10, 3) below (5, 4) is a scrape race; Prometheus lifts it to 4
    buckets = [(5.0, 4.0), (10.0, 3.0), (20.0, 8.0), (INF, 8.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(4.0 / 4.0 * 5.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(10.0 + 10.0 * (2.0 / 4.0))


def test_histogram_quantile_negative_first_bound() -> None:
    assert histogram_quantile(0.1, [(-1.0, 5.0), (0.0, 6.0), (INF, 10.0)]) == -1.0


def test_frame_from_snapshots_diffs_consecutive_reads() -> None:
    snaps = [
        Snapshot(100.0, "v1", 0, 0, hist(0, 0, 0, 0, 0)),
        Snapshot(110.0, "v1", 100, 10, hist(0, 50, 45, 5, 0)),
        Snapshot(120.0, "v1", 160, 10, hist(0, 110, 45, 5, 0)),
    ]
    df = frame_from_snapshots(snaps)
    assert list(df.columns) == FRAME_COLUMNS
    assert len(df) == 2
    first, second = df.iloc[0], df.iloc[1]
    assert first.timestamp == pd.Timestamp(110.0, unit="s", tz="UTC")
    assert first.version == "v1"
    assert first.requests == 100.0
    assert first.rps == pytest.approx(10.0)
    assert first.errors == 10.0
    assert first.error_rate == pytest.approx(0.1)
    assert first.p50_ms == pytest.approx(10.0)
    assert first.p95_ms == pytest.approx(25.0)
    assert first.p99_ms == pytest.approx(45.0)
    assert first.share == 1.0
    # second interval: 60 requests, all in (5, 10], no errors
    assert second.requests == 60.0
    assert second.rps == pytest.approx(6.0)
    assert second.error_rate == 0.0
    assert second.p50_ms == pytest.approx(7.5)


def test_no_requests_in_an_interval_is_nan_not_zero() -> None:
    snaps = [
        Snapshot(0.0, "v1", 40, 4, hist(10, 10, 10, 10, 0)),
        Snapshot(5.0, "v1", 40, 4, hist(10, 10, 10, 10, 0)),
    ]
    row = frame_from_snapshots(snaps).iloc[0]
    assert row.requests == 0.0
    assert row.rps == 0.0
    assert math.isnan(row.error_rate)
    assert math.isnan(row.p50_ms)
    assert math.isnan(row.p99_ms)
    assert math.isnan(row.share)  # nobody got traffic in that interval


def test_share_across_versions_per_interval() -> None:
    snaps = [
        Snapshot(0.0, "v1", 0, 0, ()),
        Snapshot(0.0, "v2", 0, 0, ()),
        Snapshot(0.0, "v3", 7, 0, ()),
        Snapshot(10.0, "v2", 20, 0, ()),  # order of input does not matter
        Snapshot(10.0, "v1", 80, 0, ()),
        Snapshot(10.0, "v3", 7, 0, ()),
    ]
    df = frame_from_snapshots(snaps)
    assert df.version.tolist() == ["v1", "v2", "v3"]
    assert df.share.tolist() == pytest.approx([0.8, 0.2, 0.0])
    assert df.share.sum() == pytest.approx(1.0)
    # no latency buckets reported -> quantiles unknown, not 0
    assert df.p99_ms.isna().all()


def test_counter_reset_takes_new_values_as_the_interval() -> None:
    snaps = [
        Snapshot(0.0, "v1", 500, 50, hist(100, 100, 100, 100, 100)),
        Snapshot(10.0, "v1", 30, 3, hist(0, 30, 0, 0, 0)),  # process restarted
        Snapshot(20.0, "v1", 50, 3, hist(0, 50, 0, 0, 0)),
    ]
    df = frame_from_snapshots(snaps)
    assert df.requests.tolist() == [30.0, 20.0]
    assert df.errors.tolist() == [3.0, 0.0]
    assert (df.requests >= 0).all()
    assert df.p50_ms.tolist() == pytest.approx([7.5, 7.5])


def test_reset_detected_from_buckets_alone() -> None:
    # totals happen to grow, but a bucket went down: the counters restarted
    snaps = [
        Snapshot(0.0, "v1", 10, 0, hist(10, 0, 0, 0, 0)),
        Snapshot(10.0, "v1", 12, 0, hist(0, 12, 0, 0, 0)),
    ]
    row = frame_from_snapshots(snaps).iloc[0]
    assert row.requests == 12.0
    assert row.p50_ms == pytest.approx(7.5)


def test_since_drops_older_intervals() -> None:
    snaps = [Snapshot(float(t), "v1", float(t), 0, ()) for t in (0, 10, 20, 30)]
    assert len(frame_from_snapshots(snaps)) == 3
    df = frame_from_snapshots(snaps, since=20.0)
    assert df.timestamp.tolist() == [
        pd.Timestamp(20, unit="s", tz="UTC"),
        pd.Timestamp(30, unit="s", tz="UTC"),
    ]
    assert frame_from_snapshots(snaps, since=31.0).empty


@pytest.mark.parametrize(
    "snaps",
    [
        [],
        [Snapshot(0.0, "v1", 5, 0, ())],
        [Snapshot(0.0, "v1", 5, 0, ()), Snapshot(0.0, "v1", 6, 0, ())],  # same instant
    ],
)
def test_too_few_snapshots_give_the_empty_frame(snaps: list[Snapshot]) -> None:
    df = frame_from_snapshots(snaps)
    assert df.empty
    assert list(df.columns) == FRAME_COLUMNS
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_version_appearing_later_starts_with_its_second_snapshot() -> None:
    snaps = [
        Snapshot(0.0, "v1", 0, 0, ()),
        Snapshot(10.0, "v1", 10, 0, ()),
        Snapshot(10.0, "v2", 0, 0, ()),
        Snapshot(20.0, "v1", 20, 0, ()),
        Snapshot(20.0, "v2", 30, 3, ()),
    ]
    df = frame_from_snapshots(snaps)
    assert list(zip(df.timestamp.astype("int64") // 10**9, df.version, strict=True)) == [
        (10, "v1"),
        (20, "v1"),
        (20, "v2"),
    ]
    assert df.share.tolist() == pytest.approx([1.0, 0.25, 0.75])


def test_dtypes_of_a_filled_frame_match_the_empty_one() -> None:
    snaps = [Snapshot(0.0, "v1", 0, 0, ()), Snapshot(1.0, "v1", 1, 0, ())]
    assert frame_from_snapshots(snaps).dtypes.equals(empty_frame().dtypes)


def test_normalize_frame_fills_missing_columns_and_sorts() -> None:
    df = normalize_frame(
        [
            {"timestamp": 20.0, "version": "v2", "rps": 1.0},
            {"timestamp": 10.0, "version": "v1", "rps": 2.0, "unrelated": "x"},
        ]
    )
    assert list(df.columns) == FRAME_COLUMNS
    assert df.version.tolist() == ["v1", "v2"]
    assert df.error_rate.isna().all()
    assert df.dtypes.equals(empty_frame().dtypes)
    assert normalize_frame([]).dtypes.equals(empty_frame().dtypes)


def test_latencies_that_arrive_an_interval_late_are_still_shown() -> None:
    """Envoy counts a request at once but merges its latency at the next stats flush."""
    inf = math.inf
    snaps = [
        Snapshot(0.0, "v1", requests=0, errors=0, buckets=((5.0, 0), (inf, 0))),
        Snapshot(1.0, "v1", requests=10, errors=0, buckets=((5.0, 0), (inf, 0))),
        Snapshot(2.0, "v1", requests=10, errors=0, buckets=((5.0, 10), (inf, 10))),
    ]
    frame = frame_from_snapshots(snaps)
    assert list(frame["requests"]) == [10.0, 0.0]
    assert math.isnan(frame["p50_ms"].iloc[0])
    assert frame["p50_ms"].iloc[1] == pytest.approx(2.5)
