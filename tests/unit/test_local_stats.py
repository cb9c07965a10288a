"""Envoy stats -> per-version snapshots (mlshift.local._stats.parse_prometheus), pure.

Covers: response classes summed into requests, 5xx into errors, the upstream_rq_time buckets
(with +Inf) per version, versions without any line yet, other clusters ignored, and the
admin filter regex.
"""

from __future__ import annotations

import math
import re

from mlshift.local._stats import parse_prometheus, stats_filter
from mlshift.metrics import frame_from_snapshots

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


def test_counts_and_buckets_per_version() -> None:
    v1, v2 = parse_prometheus(TEXT, CLUSTERS, timestamp=10.0)
    assert (v1.version, v1.timestamp, v1.requests, v1.errors) == ("v1", 10.0, 100.0, 10.0)
    assert v1.buckets == ((1.0, 50.0), (2.0, 99.0), (math.inf, 100.0))
    assert (v2.version, v2.requests, v2.errors, v2.buckets) == ("v2", 0.0, 0.0, ())


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
