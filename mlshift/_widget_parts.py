"""The traffic slider's parts that know ipywidgets and matplotlib: the box, the HTML, the PNG.

``mlshift._widgets`` holds the controller (what happens when a slider moves or a button is
clicked, and the refresh thread); this module holds what it draws with: the ipywidgets
import check, the ``VBox`` subclass it returns, the weights as coloured HTML and the
dashboard rendered to PNG bytes by Agg. Nothing here calls the endpoint.
"""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlshift._colors import version_colors
from mlshift._exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ERROR_COLOR", "notebook_modules", "render_png", "weights_html", "widget_class"]

ERROR_COLOR = "#b00020"


def notebook_modules() -> Any:
    """Return ipywidgets, or raise ConfigError naming the install command."""
    try:
        import ipywidgets
        import matplotlib  # noqa: F401  (checked here so the error names both)
    except ImportError as exc:
        raise ConfigError(
            f"the traffic slider needs ipywidgets and matplotlib, which cannot be imported"
            f" ({exc}); install them with: pip install 'mlshift[notebook]'"
        ) from exc
    return ipywidgets


@functools.cache
def widget_class() -> type:
    """The VBox subclass ``traffic_slider`` returns (built once, after ipywidgets loads)."""
    import ipywidgets

    class TrafficSliderWidget(ipywidgets.VBox):  # type: ignore[misc]
        """The slider box; closing it stops the refresh thread and closes its parts."""

        controller: Any  # mlshift._widgets.TrafficSlider

        def start(self) -> None:
            """Start refreshing the plots (done on first display)."""
            self.controller.start()

        def stop(self) -> None:
            """Stop refreshing the plots; the controls keep working."""
            self.controller.stop()

        def close(self) -> None:
            controller = self.__dict__.get("controller")
            if controller is not None:
                controller.close_parts()
            super().close()

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            # Called when the widget is displayed: that is when live plots are worth drawing.
            self.controller.start()
            return super()._repr_mimebundle_(**kwargs)

        def __repr__(self) -> str:  # never the default trait dump (it holds the PNG bytes)
            return repr(self.controller)

    return TrafficSliderWidget


def weights_html(weights: Mapping[str, int], names: list[str]) -> str:
    """The weights as HTML, each version in its colour (every name escaped)."""
    colors = version_colors(names or list(weights))
    parts = [
        f'<b style="color:{colors.get(v, "#000000")}">{html.escape(v)}</b>&nbsp;{int(w)}&nbsp;%'
        for v, w in weights.items()
    ]
    return " · ".join(parts) or "no versions"


def render_png(frame: pd.DataFrame, predictions: pd.DataFrame | None, title: str) -> bytes:
    """Draw the per-version dashboard with Agg and return it as PNG bytes."""
    from mlshift import plot

    figure = plot.dashboard(frame, predictions=predictions, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
