"""Plot structure: panels, shared time axis, one line per version, stable version colours."""

from __future__ import annotations

import sys

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mlshift import ConfigError, plot
from mlshift._colors import version_color
from mlshift._frame import normalize_frame
from mlshift.metrics import PredictionStats, empty_frame, predictions_frame


def metrics_df(versions: tuple[str, ...] = ("v1", "v2")) -> pd.DataFrame:
    rows = []
    for t in range(0, 300, 15):
        for i, v in enumerate(versions):
            rows.append(
                {
                    "timestamp": 1_700_000_000.0 + t,
                    "version": v,
                    "rps": 10.0 * (i + 1),
                    "error_rate": 0.01 * i,
                    "p50_ms": 5.0 + i,
                    "p95_ms": 9.0 + i,
                    "p99_ms": 12.0 + i,
                    "share": (i + 1) / sum(range(1, len(versions) + 1)),
                }
            )
    return normalize_frame(rows)


def line_colors(ax: object) -> dict[str, str]:
    return {
        line.get_label(): mcolors.to_hex(line.get_color()).upper()
        for line in ax.get_lines()  # type: ignore[attr-defined]
    }


def test_dashboard_has_three_time_panels_sharing_the_x_axis() -> None:
    fig = plot.dashboard(metrics_df(), title="churn")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    top = fig.axes[0]
    for ax in fig.axes[1:]:
        assert top.get_shared_x_axes().joined(top, ax)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "traffic share (%)",
        "5xx errors (%)",
        "p99 latency (ms)",
    ]
    assert fig.get_suptitle() == "churn"
    for ax in fig.axes:
        assert sorted(str(line.get_label()) for line in ax.get_lines()) == ["v1", "v2"]


def test_dashboard_with_predictions_adds_a_fourth_panel() -> None:
    preds = predictions_frame(
        [PredictionStats("v1", {"yes": 1, "no": 3}), PredictionStats("v2", {"yes": 2, "no": 2})],
        stable="v1",
    )
    fig = plot.dashboard(metrics_df(), predictions=preds)
    assert len(fig.axes) == 4
    bars = fig.axes[3].patches
    assert len(bars) == 4  # 2 versions x 2 classes
    legend = fig.axes[3].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["v1 (stable)", "v2 (TVD 0.25)"]
    assert not fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[3])


def test_values_are_plotted_in_percent_and_ms() -> None:
    df = metrics_df()
    ax = plot.traffic(df)
    (v1,) = [line for line in ax.get_lines() if line.get_label() == "v1"]
    assert np.allclose(v1.get_ydata(), 100 / 3)
    ax = plot.errors(df)
    (v2,) = [line for line in ax.get_lines() if line.get_label() == "v2"]
    assert np.allclose(v2.get_ydata(), 1.0)
    ax = plot.latency(df, quantile="p50")
    (v2,) = [line for line in ax.get_lines() if line.get_label() == "v2"]
    assert np.allclose(v2.get_ydata(), 6.0)


def test_one_line_per_version_in_each_helper() -> None:
    df = metrics_df(("v1", "v2", "v3"))
    for helper in (plot.traffic, plot.errors, plot.latency):
        ax = helper(df)
        assert len(ax.get_lines()) == 3
        assert np.asarray(ax.get_lines()[0].get_xdata()).shape == (20,)


def test_colours_are_the_version_colours_and_stable_across_calls() -> None:
    first = line_colors(plot.traffic(metrics_df(("v1", "v2", "v3"))))
    assert first == {v: version_color(v) for v in ("v1", "v2", "v3")}
    # v1 gone after a promotion: v2 and v3 keep their colours
    second = line_colors(plot.latency(metrics_df(("v2", "v3"))))
    assert second == {"v2": first["v2"], "v3": first["v3"]}


def test_draws_on_given_axes() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plot.errors(metrics_df(), ax=ax) is ax
    assert len(ax.get_lines()) == 2


def test_empty_frame_draws_no_lines_and_says_no_data() -> None:
    fig = plot.dashboard(empty_frame())
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_lines() == []
        assert [t.get_text() for t in ax.texts] == ["no data"]


def test_regressor_predictions_panel() -> None:
    inf = float("inf")
    preds = predictions_frame(
        [
            PredictionStats("v1", buckets=((10.0, 50), (100.0, 100), (inf, 100)), value_sum=2500),
            PredictionStats("v2", buckets=((10.0, 5), (100.0, 50), (inf, 50)), value_sum=2000),
        ],
        stable="v1",
    )
    ax = plot.predictions(preds)
    assert [line.get_label() for line in ax.get_lines()] == [
        "v1 (stable)",
        "v2 (PSI 0.88)",
    ]  # 0.4 ln 5 + 0.4 ln 1.8
    assert np.asarray(ax.get_lines()[0].get_ydata())[0] == pytest.approx(10.0)  # v1's p50


def test_wrong_frame_and_quantile_are_refused() -> None:
    with pytest.raises(ValueError, match="no column share"):
        plot.traffic(pd.DataFrame({"timestamp": [], "version": []}))
    with pytest.raises(ValueError, match="p75"):
        plot.latency(metrics_df(), quantile="p75")


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'mlshift\[notebook\]'") as info:
        plot.dashboard(metrics_df())
    assert isinstance(info.value.__cause__, ImportError)
