"""Plots of per-version metrics frames: traffic, errors, latency, predictions, a dashboard.

Each helper takes any metrics frame (``mlshift.metrics.FRAME_COLUMNS``) or predictions frame
(``mlshift.metrics.predictions_frame``), draws one line or bar per version in that version's
colour (``mlshift._colors``, the same as in the slider and HTML tables), and returns what it
drew on. Figures are built with ``matplotlib.figure.Figure``, not pyplot: nothing global is
touched, it works headless (Agg), and a notebook shows the returned Figure exactly once.

Example:
    >>> fig = mlshift.plot.dashboard(ep.metrics(since="10m"))  # doctest: +SKIP
    >>> mlshift.plot.latency(df, quantile="p95_ms")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlshift._colors import version_colors
from mlshift._exceptions import ConfigError, InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["agreement", "dashboard", "errors", "latency", "predictions", "traffic"]

_QUANTILES = ("p50_ms", "p95_ms", "p99_ms")


def _new_figure(**kwargs: Any) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            f"plotting needs matplotlib, which cannot be imported ({exc});"
            " install it with: pip install 'mlshift[notebook]'"
        ) from exc
    return Figure(**kwargs)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    return _new_figure(figsize=(8, 3), layout="constrained").add_subplot()


def _check_columns(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidArgumentError(
            f"the frame has no column {', '.join(missing)}; pass a metrics frame such as"
            " ep.metrics() or mlshift.metrics.istio_metrics(...)"
        )


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, alpha=0.6)


def _time_lines(df: pd.DataFrame, column: str, ax: Axes | None, scale: float, ylabel: str) -> Axes:
    """One line per version of ``column`` over time, each point marked (one point still shows)."""
    _check_columns(df, "timestamp", "version", column)
    ax = _axes(ax)
    colors = version_colors(df["version"].astype(str).unique().tolist())
    for version, color in colors.items():
        rows = df[df["version"] == version].sort_values("timestamp")
        times = pd.to_datetime(rows["timestamp"], utc=True).dt.tz_convert(None)
        ax.plot(
            times,
            rows[column] * scale,
            label=version,
            color=color,
            linewidth=1.6,
            marker="o",
            markersize=3,
        )
    if not colors:
        _no_data(ax)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    ax.grid(True, alpha=0.3)
    return ax


def traffic(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The share of each interval's requests each version actually served, in percent.

    It is measured, not the weights: a split shows only statistically (a few requests per
    interval wobble around the weights).

    Example:
        >>> mlshift.plot.traffic(ep.metrics(since="10m"))  # doctest: +SKIP
    """
    ax = _time_lines(df, "share", ax, 100.0, "traffic share (%)")
    ax.set_ylim(-2, 102)
    return ax


def errors(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """5xx error rate per version over time, in percent (gaps where there was no traffic).

    Example:
        >>> mlshift.plot.errors(ep.metrics(since="10m"))  # doctest: +SKIP
    """
    ax = _time_lines(df, "error_rate", ax, 100.0, "5xx errors (%)")
    ax.set_ylim(bottom=0)
    return ax


def latency(df: pd.DataFrame, ax: Axes | None = None, quantile: str = "p99_ms") -> Axes:
    """A latency quantile per version over time, in milliseconds.

    Args:
        df: a metrics frame.
        ax: axes to draw on; a new figure when None.
        quantile: ``"p50_ms"``, ``"p95_ms"`` or ``"p99_ms"`` (``"p99"`` works too).

    Example:
        >>> mlshift.plot.latency(df, quantile="p95_ms")  # doctest: +SKIP
    """
    column = quantile if quantile.endswith("_ms") else f"{quantile}_ms"
    if column not in _QUANTILES:
        raise InvalidArgumentError(
            f"quantile {quantile!r} is not one of {', '.join(_QUANTILES)};"
            " pass e.g. quantile='p95_ms'"
        )
    ax = _time_lines(df, column, ax, 1.0, f"{column[:3]} latency (ms)")
    ax.set_ylim(bottom=0)
    return ax


def _divergence_label(pred_df: pd.DataFrame, version: str, value: float) -> str:
    name = str(pred_df.attrs.get("divergence", "divergence")).upper()
    if version == pred_df.attrs.get("stable"):
        return f"{version} (stable)"
    return version if math.isnan(value) else f"{version} ({name} {value:.2f})"


def predictions(pred_df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """What each version predicts: class shares side by side, or p10-p90 ranges with p50.

    The legend carries each version's divergence from the stable one (TVD or PSI).

    Example:
        >>> mlshift.plot.predictions(ep.predictions(since="10m"))  # doctest: +SKIP
    """
    return _draw_predictions(pred_df, ax)


def _draw_predictions(pred_df: pd.DataFrame, ax: Axes | None) -> Axes:
    _check_columns(pred_df, "version", "divergence")
    ax = _axes(ax)
    versions = pred_df["version"].astype(str).unique().tolist()
    colors = version_colors(versions)
    if not versions:
        _no_data(ax)
        return ax
    if "class" in pred_df.columns:
        classes = sorted(pred_df["class"].astype(str).unique().tolist())
        width = 0.8 / len(colors)
        for i, (version, color) in enumerate(colors.items()):
            rows = pred_df[pred_df["version"] == version].set_index("class")
            shares = [float(rows["share"].get(c, 0.0)) * 100 for c in classes]
            label = _divergence_label(pred_df, version, float(rows["divergence"].iloc[0]))
            xs = [j + (i - (len(colors) - 1) / 2) * width for j in range(len(classes))]
            ax.bar(xs, shares, width=width, color=color, label=label)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_ylabel("predicted class (%)")
    else:
        _check_columns(pred_df, "p10", "p50", "p90")
        for i, (version, color) in enumerate(colors.items()):
            row = pred_df[pred_df["version"] == version].iloc[0]
            label = _divergence_label(pred_df, version, float(row["divergence"]))
            ax.vlines(i, row["p10"], row["p90"], color=color, linewidth=6, alpha=0.5)
            ax.plot([i], [row["p50"]], marker="o", color=color, label=label, linestyle="")
        ax.set_xticks(range(len(colors)), list(colors))
        ax.set_ylabel("prediction (p10-p90, p50)")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def dashboard(
    df: pd.DataFrame, *, predictions: pd.DataFrame | None = None, title: str | None = None
) -> Figure:
    """One figure: traffic share, error rate and p99 latency sharing the time axis.

    Args:
        df: a metrics frame.
        predictions: a predictions frame, drawn in a fourth panel when given.
        title: the figure title.

    Returns:
        The matplotlib Figure (a notebook cell shows it).

    Example:
        >>> fig = mlshift.plot.dashboard(ep.metrics(since="10m"), title="churn")  # doctest: +SKIP
        >>> fig.savefig("churn.png")  # doctest: +SKIP
    """
    panels = 3 if predictions is None else 4
    fig = _new_figure(figsize=(9, 2.3 * panels), layout="constrained")
    top = fig.add_subplot(panels, 1, 1)
    traffic(df, ax=top)
    errors(df, ax=fig.add_subplot(panels, 1, 2, sharex=top))
    latency(df, ax=fig.add_subplot(panels, 1, 3, sharex=top))
    for ax in fig.axes[:2]:
        ax.set_xlabel("")
        ax.tick_params(labelbottom=False)
    if len(top.get_lines()):
        top.legend(loc="upper left", fontsize="small", ncols=min(6, len(top.get_lines())))
    if predictions is not None:
        _draw_predictions(predictions, fig.add_subplot(panels, 1, 4))
    if title:
        fig.suptitle(title)
    return fig


def agreement(over_time: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Axes:
    """Agreement of two versions' answers per time bucket (``Comparison.over_time()``).

    Example:
        >>> mlshift.plot.agreement(ep.compare("v1", "v2").over_time("1min"))  # doctest: +SKIP
    """
    _check_columns(over_time, "time", "agreement", "pairs")
    ax = _axes(ax)
    rows = over_time[over_time["pairs"] > 0]
    if rows.empty:
        _no_data(ax)
    else:
        ax.plot(rows["time"], rows["agreement"] * 100, marker="o", color="#444")
    ax.set_ylabel("agreement %")
    ax.set_ylim(0, 101)
    if title:
        ax.set_title(title)
    return ax
