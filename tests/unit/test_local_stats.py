"""Envoy stats -> per-version snapshots (mlshift.local._stats), prediction windows
(mlshift.local._predictions), pure but for files in a temp dir.

Covers: response classes summed into requests, 5xx into errors, the upstream_rq_time buckets
(with +Inf) per version, versions without any line yet, other clusters ignored, text captured
from a real Envoy, text that is not an exposition, and the admin filter regex; prediction
samples diffed over a window (baseline: newest sample of the same process at or before the
start; none: counters since start), versions idle in the window left out, the prediction
store's round trip and its bounded size.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from mlshift._exceptions import MetricsUnavailableError
from mlshift.local._predictions import PredictionSample, PredictionStore, window
from mlshift.local._stats import append_line, parse_prometheus, stats_filter
from mlshift.metrics import PredictionStats, frame_from_snapshots

TEXT = """\
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="churn_v1"} 90
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="churn_v1"} 10
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="other_v1"} 7
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="1"} 50
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="2"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="+Inf"} 100
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="churn_v1"} 120.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="churn_v1"} 100
"""
CLUSTERS = {"churn_v1": "v1", "churn_v2": "v2"}

# Envoy 1.40's /stats/prometheus with stats_filter(...) after 9 + 1 (500) requests to churn_v1,
# 3 to churn_v2 and 1 to other_v1, with mlshift's bucket settings; buckets from 3 to 30000 ms
# left out to keep it short. Envoy prints one TYPE line per stat, its samples grouped under it.
ENVOY_TEXT = """\
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="churn_v1"} 9
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="churn_v1"} 1
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="churn_v2"} 3
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="other_v1"} 1
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="0.5"} 7
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="1"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="2"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="60000"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1",le="+Inf"} 10
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="churn_v1"} 3.1428571428571432377907513000537
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="churn_v1"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v2",le="0.5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v2",le="1"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v2",le="2"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v2",le="60000"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v2",le="+Inf"} 3
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="churn_v2"} 2.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="churn_v2"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="other_v1",le="0.5"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="other_v1",le="1"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="other_v1",le="2"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="other_v1",le="60000"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="other_v1",le="+Inf"} 1
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="other_v1"} 1.0476190476190476719153821250075
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="other_v1"} 1

"""


def test_counts_and_buckets_per_version() -> None:
    v1, v2 = parse_prometheus(TEXT, CLUSTERS, timestamp=10.0)
    assert (v1.version, v1.timestamp, v1.requests, v1.errors) == ("v1", 10.0, 100.0, 10.0)
    assert v1.buckets == ((1.0, 50.0), (2.0, 99.0), (math.inf, 100.0))
    assert (v2.version, v2.requests, v2.errors, v2.buckets) == ("v2", 0.0, 0.0, ())


def test_text_captured_from_envoy() -> None:
    clusters = {"churn_v1": "v1", "churn_v2": "v2", "churn_v3": "v3"}
    v1, v2, v3 = parse_prometheus(ENVOY_TEXT, clusters, timestamp=5.0)
    inf = math.inf
    assert (v1.requests, v1.errors) == (10.0, 1.0)
    assert v1.buckets == ((0.5, 7.0), (1.0, 10.0), (2.0, 10.0), (60000.0, 10.0), (inf, 10.0))
    assert (v2.requests, v2.errors) == (3.0, 0.0)
    assert v2.buckets == ((0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (60000.0, 3.0), (inf, 3.0))
    assert (v3.version, v3.requests, v3.errors, v3.buckets) == ("v3", 0.0, 0.0, ())


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>404 page not found</body></html>\n",
        'envoy_cluster_upstream_rq_xx{envoy_cluster_name="churn_v1"} many\n',
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="churn_v1"} 3\n',
    ],
)
def test_text_that_is_not_an_exposition_is_metrics_unavailable(text: str) -> None:
    with pytest.raises(MetricsUnavailableError, match="not a Prometheus exposition"):
        parse_prometheus(text, CLUSTERS, timestamp=0.0)


def test_snapshots_diff_into_the_frame() -> None:
    first = parse_prometheus("", CLUSTERS, timestamp=0.0)
    second = parse_prometheus(TEXT, CLUSTERS, timestamp=10.0)
    frame = frame_from_snapshots([*first, *second])
    row = frame.set_index("version").loc["v1"]
    assert row.requests == 100.0
    assert row.rps == 10.0
    assert row.error_rate == 0.1
    assert 1.0 < row.p95_ms <= 2.0


def test_filter_selects_only_the_needed_stats() -> None:
    pattern = re.compile(stats_filter(["churn_v1", "churn_v2"]))
    assert pattern.match("cluster.churn_v1.upstream_rq_5xx")
    assert pattern.match("cluster.churn_v2.upstream_rq_time")
    assert not pattern.match("cluster.churn_v1.upstream_rq_503")
    assert not pattern.match("cluster.churn_v10.upstream_rq_2xx")
    assert not pattern.match("cluster.other_v1.upstream_rq_2xx")


def _sample(t: float, version: str, yes: float, *, pid: int = 7) -> PredictionSample:
    return PredictionSample(t, pid, PredictionStats(version, {"yes": yes, "no": 2 * yes}))


def test_window_diffs_against_the_newest_sample_before_its_start() -> None:
    samples = [_sample(0.0, "v1", 10), _sample(50.0, "v1", 40), _sample(70.0, "v1", 45)]
    samples += [_sample(100.0, "v1", 100)]
    (v1,) = window(samples, now=100.0, since=40.0)  # start 60: the sample at 50 is the base
    assert v1.classes == {"yes": 60.0, "no": 120.0}
    (v1,) = window(samples, now=100.0, since=50.0)  # start 50: a sample exactly at it counts
    assert v1.classes == {"yes": 60.0, "no": 120.0}
    (v1,) = window(samples, now=100.0, since=95.0)
    assert v1.classes == {"yes": 90.0, "no": 180.0}


def test_window_without_an_old_enough_sample_counts_since_start() -> None:
    samples = [_sample(80.0, "v1", 3), _sample(100.0, "v1", 5)]
    (v1,) = window(samples, now=100.0, since=60.0)
    assert v1.count == 15.0


def test_window_ignores_samples_of_a_replaced_process_and_idle_versions() -> None:
    samples = [
        _sample(0.0, "v1", 1, pid=1),  # the process before a model change
        _sample(90.0, "v1", 4, pid=2),
        _sample(0.0, "v2", 9),
        _sample(10.0, "v2", 9),  # v2 stopped long before the window
    ]
    assert window(samples, now=100.0, since=30.0) == [
        PredictionStats("v1", {"yes": 4.0, "no": 8.0})
    ]


def test_window_with_regressor_buckets() -> None:
    inf = math.inf
    old = PredictionSample(0.0, 7, PredictionStats("v1", buckets=((1.0, 2), (inf, 5)), value_sum=6))
    new = PredictionSample(9.0, 7, PredictionStats("v1", buckets=((1.0, 3), (inf, 9)), value_sum=9))
    (v1,) = window([new, old], now=10.0, since=5.0)
    assert v1.buckets == ((1.0, 1.0), (inf, 4.0))
    assert (v1.count, v1.value_sum) == (4.0, 3.0)


def test_prediction_store_round_trip(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "predictions.jsonl")
    inf = math.inf
    regressor = PredictionStats("v2", buckets=((0.5, 1.0), (inf, 3.0)), value_sum=2.5)
    store.append([_sample(1.0, "v1", 3), PredictionSample(1.0, 8, regressor)])
    store.append([])
    with open(store.path, "a") as fh:
        fh.write('[{"t": 2.0, "p": 7, "v": "v1"')  # a line cut short by a crash
    assert store.read() == [_sample(1.0, "v1", 3), PredictionSample(1.0, 8, regressor)]
    assert "Infinity" not in store.path.read_text()


def test_appended_lines_stay_bounded(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    for i in range(1000):
        append_line(path, f'{{"i": {i:04d}}}', max_bytes=2000)
    lines = path.read_text().splitlines()
    assert path.stat().st_size <= 2000
    assert lines[-1] == '{"i": 0999}'
    assert len(lines) > 50
