"""Prediction metrics: parsing expositions, windows, class shares, quantiles, TVD and PSI."""

from __future__ import annotations

import math

import pytest

from mlshift import InvalidNameError, MetricsUnavailableError
from mlshift._prediction_stats import (
    CLASSIFIER_COLUMNS,
    REGRESSOR_COLUMNS,
    psi,
    total_variation,
)
from mlshift.metrics import (
    PredictionStats,
    parse_exposition,
    predictions_frame,
    stats_delta,
)
from mlshift.metrics._predictions import _matchers

INF = math.inf

CLASSIFIER_TEXT = """\
# HELP mlshift_predictions_total Predicted classes (classifiers).
# TYPE mlshift_predictions_total counter
mlshift_predictions_total{model="churn",version="v1",class="no"} 75.0
mlshift_predictions_total{model="churn",version="v1",class="yes"} 25.0
mlshift_predictions_total{model="churn",version="v2",class="no"} 25.0
mlshift_predictions_total{model="churn",version="v2",class="yes"} 25.0
mlshift_predictions_total{model="other",version="v1",class="yes"} 1000.0
# HELP mlshift_predictions_created Predicted classes (classifiers).
# TYPE mlshift_predictions_created gauge
mlshift_predictions_created{model="churn",version="v1",class="no"} 1.7e9
# HELP mlshift_requests_total Requests by route and HTTP status.
# TYPE mlshift_requests_total counter
mlshift_requests_total{model="churn",version="v1",route="/v2/models/{m}/infer",code="200"} 9.0
"""

REGRESSOR_TEXT = """\
# HELP mlshift_prediction_value Predicted values (regressors).
# TYPE mlshift_prediction_value histogram
mlshift_prediction_value_bucket{le="0.0",model="price",version="v1"} 0.0
mlshift_prediction_value_bucket{le="10.0",model="price",version="v1"} 50.0
mlshift_prediction_value_bucket{le="100.0",model="price",version="v1"} 100.0
mlshift_prediction_value_bucket{le="+Inf",model="price",version="v1"} 100.0
mlshift_prediction_value_count{model="price",version="v1"} 100.0
mlshift_prediction_value_sum{model="price",version="v1"} 2500.0
mlshift_prediction_value_bucket{le="0.0",model="price",version="v2"} 0.0
mlshift_prediction_value_bucket{le="10.0",model="price",version="v2"} 5.0
mlshift_prediction_value_bucket{le="100.0",model="price",version="v2"} 50.0
mlshift_prediction_value_bucket{le="+Inf",model="price",version="v2"} 50.0
mlshift_prediction_value_count{model="price",version="v2"} 50.0
mlshift_prediction_value_sum{model="price",version="v2"} 2000.0
"""


def test_parse_classifier_exposition_filters_by_model() -> None:
    stats = {s.version: s for s in parse_exposition(CLASSIFIER_TEXT, model="churn")}
    assert set(stats) == {"v1", "v2"}
    assert stats["v1"].classes == {"no": 75.0, "yes": 25.0}
    assert stats["v1"].count == 100.0
    assert stats["v2"].count == 50.0
    everything = {s.version: s for s in parse_exposition(CLASSIFIER_TEXT)}
    assert everything["v1"].classes["yes"] == 1025.0  # two models, summed per version


def test_parse_regressor_exposition() -> None:
    (v1, v2) = parse_exposition(REGRESSOR_TEXT, model="price")
    assert v1.version == "v1"
    assert v1.buckets == ((0.0, 0.0), (10.0, 50.0), (100.0, 100.0), (INF, 100.0))
    assert v1.count == 100.0
    assert v1.value_sum == 2500.0
    assert v2.count == 50.0


def test_parse_what_model_server_renders() -> None:
    from model_server._metrics import ServerMetrics

    clf = ServerMetrics("churn", "v3", task="classification")
    clf.observe_predictions(["yes", "no", "no", "no"])
    reg = ServerMetrics("price", "v4", task="regression", value_buckets=[1.0, 10.0])
    reg.observe_predictions([0.5, 5.0, 50.0])
    text = clf.render().decode() + reg.render().decode()
    (c,) = parse_exposition(text, model="churn")
    assert c.version == "v3"
    assert c.classes == {"no": 3.0, "yes": 1.0}
    (r,) = parse_exposition(text, model="price")
    assert r.buckets == ((1.0, 1.0), (10.0, 2.0), (INF, 3.0))
    assert r.value_sum == pytest.approx(55.5)


def test_text_that_is_not_an_exposition_raises() -> None:
    with pytest.raises(MetricsUnavailableError, match="not a Prometheus exposition"):
        parse_exposition('mlshift_predictions_total{model="churn" 12\n')


def test_parse_empty_text_gives_no_stats() -> None:
    assert parse_exposition("") == []


def test_stats_delta_over_a_window_and_after_restart() -> None:
    early = PredictionStats("v1", {"yes": 10, "no": 30})
    late = PredictionStats("v1", {"yes": 15, "no": 40, "maybe": 1})
    assert stats_delta(late, early).classes == {"yes": 5.0, "no": 10.0, "maybe": 1.0}
    restarted = PredictionStats("v1", {"yes": 2, "no": 1})
    assert stats_delta(restarted, early).classes == {"yes": 2, "no": 1}
    a = PredictionStats("v1", buckets=((1.0, 4), (INF, 10)), value_sum=20.0)
    b = PredictionStats("v1", buckets=((1.0, 6), (INF, 15)), value_sum=26.0)
    d = stats_delta(b, a)
    assert d.buckets == ((1.0, 2), (INF, 5))
    assert d.value_sum == 6.0
    assert d.count == 5.0


def test_total_variation_distance() -> None:
    assert total_variation({"a": 1, "b": 1}, {"a": 1, "b": 1}) == 0.0
    assert total_variation({"a": 1}, {"b": 5}) == 1.0
    assert total_variation({"no": 75, "yes": 25}, {"no": 25, "yes": 25}) == pytest.approx(0.25)
    assert math.isnan(total_variation({}, {"a": 1}))
    assert math.isnan(total_variation({"a": 0}, {"a": 1}))


def test_psi_known_value_and_symmetry_of_zero() -> None:
    a = [(10.0, 50.0), (INF, 100.0)]  # 50 / 50
    b = [(10.0, 10.0), (INF, 100.0)]  # 10 / 90
    expected = (0.1 - 0.5) * math.log(0.1 / 0.5) + (0.9 - 0.5) * math.log(0.9 / 0.5)
    assert psi(a, b) == pytest.approx(expected)
    assert psi(a, a) == 0.0
    assert psi(a, b) == pytest.approx(psi(b, a))  # PSI is symmetric
    assert math.isnan(psi(a, [(10.0, 0.0), (INF, 0.0)]))


def test_psi_is_finite_with_empty_buckets() -> None:
    a = [(10.0, 100.0), (INF, 100.0)]
    b = [(10.0, 0.0), (INF, 100.0)]
    assert math.isfinite(psi(a, b))
    assert psi(a, b) > 5  # a complete shift scores far above the 0.25 "major" line


def test_psi_with_different_bucket_bounds() -> None:
    a = [(5.0, 50.0), (10.0, 50.0), (INF, 100.0)]
    b = [(10.0, 50.0), (INF, 100.0)]  # no 5.0 bound: its count there is read as 0
    assert math.isfinite(psi(a, b))
    assert psi(a, b) > 0


def test_classifier_frame_shares_and_tvd() -> None:
    df = predictions_frame(parse_exposition(CLASSIFIER_TEXT, model="churn"), stable="v1")
    assert list(df.columns) == CLASSIFIER_COLUMNS
    assert df.attrs["kind"] == "classification"
    assert df.attrs["divergence"] == "tvd"
    assert df[["version", "class"]].values.tolist() == [
        ["v1", "no"],
        ["v1", "yes"],
        ["v2", "no"],
        ["v2", "yes"],
    ]
    assert df["count"].tolist() == [75.0, 25.0, 25.0, 25.0]
    assert df["share"].tolist() == pytest.approx([0.75, 0.25, 0.5, 0.5])
    assert df.groupby("version").divergence.first().tolist() == pytest.approx([0.0, 0.25])


def test_stable_defaults_to_the_version_with_most_predictions() -> None:
    stats = [PredictionStats("v1", {"a": 1}), PredictionStats("v2", {"a": 5, "b": 5})]
    df = predictions_frame(stats)
    assert df.attrs["stable"] == "v2"
    assert df.groupby("version").divergence.first().to_dict() == pytest.approx(
        {"v1": 0.5, "v2": 0.0}
    )


def test_replicas_of_a_version_are_summed() -> None:
    stats = [PredictionStats("v1", {"a": 1}), PredictionStats("v1", {"a": 2, "b": 1})]
    df = predictions_frame(stats)
    assert df["count"].tolist() == [3.0, 1.0]


def test_version_without_predictions_has_nan_share_and_divergence() -> None:
    stats = [PredictionStats("v1", {"a": 4}), PredictionStats("v2", {"a": 0})]
    df = predictions_frame(stats, stable="v1")
    v2 = df[df.version == "v2"].iloc[0]
    assert v2["count"] == 0.0
    assert math.isnan(v2["share"])
    assert math.isnan(v2["divergence"])


def test_regressor_frame_quantiles_mean_and_psi() -> None:
    df = predictions_frame(parse_exposition(REGRESSOR_TEXT, model="price"), stable="v1")
    assert list(df.columns) == REGRESSOR_COLUMNS
    assert df.attrs["divergence"] == "psi"
    v1, v2 = df.iloc[0], df.iloc[1]
    assert v1["count"] == 100.0
    assert v1["p10"] == pytest.approx(2.0)  # rank 10 of 50 in (0, 10]
    assert v1["p50"] == pytest.approx(10.0)
    assert v1["p90"] == pytest.approx(10.0 + 90.0 * (40.0 / 50.0))
    assert v1["mean"] == 25.0
    assert v2["mean"] == 40.0
    assert v1["divergence"] == 0.0
    expected = (0.1 - 0.5) * math.log(0.1 / 0.5) + (0.9 - 0.5) * math.log(0.9 / 0.5)
    assert v2["divergence"] == pytest.approx(expected)


def test_unknown_stable_version_gives_nan_divergence() -> None:
    df = predictions_frame([PredictionStats("v1", {"a": 1})], stable="v9")
    assert df.divergence.isna().all()


@pytest.mark.parametrize(
    ("kind", "columns"),
    [("auto", CLASSIFIER_COLUMNS), ("classification", CLASSIFIER_COLUMNS),
     ("regression", REGRESSOR_COLUMNS)],
)  # fmt: skip
def test_no_data_gives_an_empty_frame_with_columns(kind: str, columns: list[str]) -> None:
    df = predictions_frame([], kind=kind)  # type: ignore[arg-type]
    assert df.empty
    assert list(df.columns) == columns


def test_promql_matchers_quote_values_and_check_label_names() -> None:
    assert _matchers("churn", {"namespace": 'm"l'}) == 'model="churn",namespace="m\\"l"'
    with pytest.raises(InvalidNameError, match="label name"):
        _matchers("churn", {"bad-label": "x"})
