"""The traffic slider: ipywidgets controls that shift an endpoint's traffic, with live plots.

Owns ``traffic_slider(ep)`` (behind ``Endpoint.slider()``) and ``TrafficSlider``, the
controller that holds the ipywidgets and does the work, so tests drive it in plain pytest
without a kernel: set a slider's ``value``, ``click()`` a button, call ``refresh()``.

How it behaves, and why:

- Every change goes through the facade (``ep.shift``, ``ep.promote``, ``ep.rollback``); the
  sliders then show what the target says is applied. When a change is refused (invalid
  weights, a version not ready, a conflict) the error is shown in the widget, escaped, and
  the sliders snap back to the weights re-read from the target: never lost in a log.
- Two versions get one slider, the newest version's share; more get one slider each, kept
  summing to 100 by ``ep.shift("v2", 50)``'s pro-rata rule. ``continuous_update=False``:
  dragging sends one change, not one per pixel.
- Promote and Roll back ask for confirmation (Yes / Cancel) before they act.
- The plot area is an ``ipywidgets.Image`` holding a PNG of ``mlshift.plot.dashboard``
  rendered by Agg. It is plain widget state, so it renders alike in JupyterLab 4, Notebook 7
  and headless runs (nbval), and a background thread may update it; an ``Output`` widget
  only captures output produced by the thread that runs a cell.
- The refresh thread (a daemon) starts when the widget is first displayed, or on
  ``.start()``; it stops on ``.stop()``, ``.close()`` and at interpreter exit. It also picks
  up changes made elsewhere (``ep.shift`` in another cell, a new version). It reads the
  metrics without holding the controller's lock, so a slow or timing-out metrics source
  never freezes the sliders and buttons; a read that began before a change made here is
  not allowed to show its older weights. This module is imported on first use, with
  ipywidgets and matplotlib, so ``import mlshift`` stays fast.
"""

from __future__ import annotations

import atexit
import functools
import html
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mlshift._colors import version_colors
from mlshift._durations import parse_duration
from mlshift._exceptions import InvalidArgumentError, MlshiftError
from mlshift._widget_parts import (
    ERROR_COLOR,
    notebook_modules,
    render_png,
    weights_html,
    widget_class,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._view import EndpointView

__all__ = ["TrafficSlider", "traffic_slider"]

log = logging.getLogger("mlshift.widgets")

_LIVE: weakref.WeakSet[TrafficSlider] = weakref.WeakSet()


def traffic_slider(
    ep: EndpointView, *, refresh: str | float = "3s", since: str | float = "2m"
) -> Any:
    """Return a widget that shifts ``ep``'s traffic, with live per-version plots.

    The widget is not displayed here (so it composes); show it by leaving it last in a cell
    or with ``display()``. The plots start refreshing when it is first displayed; ``.stop()``
    or ``.close()`` ends the refresh thread.

    Args:
        ep: the endpoint to control.
        refresh: how often the plots are redrawn (seconds or a string like ``"3s"``).
        since: the time window the plots show (``"2m"``).

    Returns:
        An ``ipywidgets.VBox`` subclass with ``.controller`` (the ``TrafficSlider``),
        ``.start()`` and ``.stop()``.

    Example:
        >>> w = traffic_slider(ep, refresh="5s")  # doctest: +SKIP
        >>> w  # doctest: +SKIP
        >>> w.stop()  # doctest: +SKIP
    """
    return TrafficSlider(ep, refresh=refresh, since=since).widget


def _stop_all_at_exit() -> None:
    for controller in list(_LIVE):
        controller.stop(timeout=1.0)


# Kernel shutdown: stop every refresh thread before the interpreter tears modules down.
atexit.register(_stop_all_at_exit)


class TrafficSlider:
    """The slider's controller: holds the ipywidgets and turns their events into facade calls.

    Attributes:
        widget: the box to display (``traffic_slider`` returns it).
        sliders: version -> IntSlider. With two versions only the newest has one (its share).
        status: HTML line with the applied weights and how long the change took, or the error.
        promote_button, rollback_button, yes_button, cancel_button: the action buttons;
            Promote and Roll back only ask, Yes acts, Cancel forgets.
        version_picker: which version Promote sends all traffic to (default: the newest).
        plot: the Image widget with the dashboard PNG; plot_status says when it was drawn.

    Example:
        >>> ctl = TrafficSlider(ep)  # doctest: +SKIP
        >>> ctl.sliders["v2"].value = 30  # shifts v1=70, v2=30 # doctest: +SKIP
        >>> ctl.widget.close()  # doctest: +SKIP
    """

    def __init__(
        self, ep: EndpointView, *, refresh: str | float = "3s", since: str | float = "2m"
    ) -> None:
        w = notebook_modules()
        self.ep = ep
        # The refresh thread reads through its own Endpoint: an Endpoint's cache is not
        # thread-safe, and the notebook keeps using ``ep`` while the plots refresh.
        self._reader = ep.reader()
        self.interval = parse_duration(refresh, what="refresh")
        if self.interval < 0.5:
            raise InvalidArgumentError(
                f"refresh must be at least 0.5 s, got {refresh!r}; e.g. refresh='3s'"
            )
        self.since = parse_duration(since, what="since")
        # About 24 points across the window, at least one per second.
        self.step = min(60.0, max(1.0, self.since / 24))
        self._lock = threading.RLock()
        self._syncing = False
        # Bumped by every change made through the widget: a refresh whose read began before
        # it must not show the weights it read, which that change has made stale.
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pending: tuple[str, str] | None = None
        self._names: list[str] = []
        self._reported: dict[str, int] = {}  # the weights the status line last spoke of
        self.sliders: dict[str, Any] = {}
        self.refreshes = 0
        """How many times the plot was redrawn (tests and curious users read it)."""

        self.title = w.HTML()
        self.slider_box = w.VBox()
        self.status = w.HTML()
        self.version_picker = w.Dropdown(description="version", layout=w.Layout(width="12em"))
        self.version_picker.style.description_width = "4em"
        self.promote_button = w.Button(
            description="Promote", icon="check", tooltip="send all traffic to the chosen version"
        )
        self.rollback_button = w.Button(
            description="Roll back", icon="undo", tooltip="return to the split before the last"
        )
        self.confirm_label = w.HTML()
        self.yes_button = w.Button(description="Yes", button_style="danger")
        self.cancel_button = w.Button(description="Cancel")
        self.confirm_box = w.HBox(
            [self.confirm_label, self.yes_button, self.cancel_button],
            layout=w.Layout(display="none"),
        )
        self.plot = w.Image(format="png", layout=w.Layout(max_width="900px", display="none"))
        self.plot_status = w.HTML()
        self.promote_button.on_click(lambda _: self.ask("promote"))
        self.rollback_button.on_click(lambda _: self.ask("rollback"))
        self.yes_button.on_click(lambda _: self.confirm())
        self.cancel_button.on_click(lambda _: self.cancel())
        actions = w.HBox([self.version_picker, self.promote_button, self.rollback_button])
        self.widget = widget_class()(
            children=[
                self.title,
                self.slider_box,
                self.status,
                actions,
                self.confirm_box,
                self.plot_status,
                self.plot,
            ]
        )
        self.widget.controller = self
        try:
            self.ep.status()  # the applied weights and readiness, not a stale cache
        except MlshiftError as exc:
            self._show_error(exc, "could not read the endpoint")
        else:
            self.status.value = f"applied: {weights_html(self.ep.weights, self._names)}"
        self._reported = self.ep.weights
        self._sync()

    # -- keeping the controls in step with the target ------------------------------------------

    def _sync(self, source: EndpointView | None = None) -> None:
        """Show the cached weights of ``source`` (default ``ep``); rebuild on new versions."""
        source = source or self.ep
        weights = source.weights
        names = list(source.versions) or list(weights)
        with self._lock:
            self._syncing = True
            try:
                if names != self._names:
                    self._build(names)
                for version, slider in self.sliders.items():
                    slider.value = int(weights.get(version, 0))
                self.title.value = (
                    f"<b>{html.escape(self.ep.name)}</b> on {html.escape(self.ep.target.name)}:"
                    f" {weights_html(weights, names)}"
                )
            finally:
                self._syncing = False

    def _build(self, names: list[str]) -> None:
        import ipywidgets as w

        for slider in self.sliders.values():
            slider.close()
        self._names = names
        colors = version_colors(names)
        shown = names[-1:] if len(names) == 2 else names if len(names) > 2 else []
        self.sliders = {}
        for version in shown:
            label = f"{version} share %" if len(names) == 2 else f"{version} %"
            slider = w.IntSlider(
                value=0,
                min=0,
                max=100,
                step=1,
                description=label,
                continuous_update=False,
                style={"description_width": "8em", "handle_color": colors[version]},
                layout=w.Layout(width="32em"),
            )
            slider.observe(functools.partial(self._on_slide, version), names="value")
            self.sliders[version] = slider
        note = [] if shown else [w.HTML("<i>deploy a second version to split traffic</i>")]
        self.slider_box.children = [*self.sliders.values(), *note]
        self.version_picker.options = names
        self.version_picker.value = names[-1] if names else None
        enabled = len(names) > 1
        self.promote_button.disabled = self.rollback_button.disabled = not enabled

    def _on_slide(self, version: str, change: Mapping[str, Any]) -> None:
        with self._lock:
            if self._syncing:  # our own update from _sync, not the user's
                return
            share = int(change["new"])
            if len(self._names) == 2:
                new = {self._names[0]: 100 - share, version: share}
                self._act(f"shift {version} to {share} %", lambda: self.ep.shift(new))
            else:  # the others share the rest pro rata, from the split applied right now
                self._act(f"shift {version} to {share} %", lambda: self.ep.shift(version, share))

    def _act(self, what: str, action: Callable[[], object]) -> bool:
        """Run ``action``; show the applied weights and the time taken, or the error."""
        with self._lock:
            self._generation += 1
            started = time.perf_counter()
            try:
                action()
            except MlshiftError as exc:
                self._refused(exc, f"{what} was refused")
                return False
            except Exception as exc:  # the UI boundary: an error here must reach the user
                log.exception("%s failed", what)
                self._refused(exc, f"{what} failed")
                return False
            took = (time.perf_counter() - started) * 1000
            self._sync()
            self._reported = self.ep.weights
            self.status.value = (
                f"applied: {weights_html(self.ep.weights, self._names)}"
                f" <small>({html.escape(what)}, {took:.0f} ms)</small>"
            )
            log.info("%s: %s in %.0f ms", self.ep.name, what, took)
            return True

    def _refused(self, exc: BaseException, what: str) -> None:
        """Show the error, re-read what the target really applies, snap the sliders to it."""
        note = ""
        try:
            self.ep.status()
        except MlshiftError as reread:
            log.warning("could not re-read %s after an error: %s", self.ep.name, reread)
            note = (
                f"<br><small>(could not re-read the applied weights: {html.escape(str(reread))};"
                " showing the last known ones)</small>"
            )
        self._sync()
        self._show_error(exc, what)
        self.status.value += note

    def _show_error(self, exc: BaseException, what: str) -> None:
        self.status.value = (
            f'<span style="color:{ERROR_COLOR}">⚠ {html.escape(what)}:'
            f" {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"
            f"<br>applied: {weights_html(self.ep.weights, self._names)}"
        )
        self._reported = self.ep.weights

    # -- promote / roll back with confirmation -------------------------------------------------

    def ask(self, action: str) -> None:
        """Ask for confirmation of ``"promote"`` (the picked version) or ``"rollback"``."""
        with self._lock:
            if action == "promote":
                version = self.version_picker.value
                if not version:
                    return
                self._pending = ("promote", str(version))
                question = f"Confirm promote {html.escape(str(version))}? It takes 100 %."
            elif action == "rollback":
                try:
                    history = self.ep.history()
                except MlshiftError as exc:
                    self._show_error(exc, "could not read the traffic history")
                    return
                if not history:
                    self.status.value = (
                        f'<span style="color:{ERROR_COLOR}">⚠ nothing to roll back to: no'
                        " earlier split; use Promote to send everything to one version</span>"
                    )
                    return
                self._pending = ("rollback", "")
                question = f"Confirm roll back to {weights_html(history[-1], self._names)}?"
            else:
                raise InvalidArgumentError(
                    f"action must be 'promote' or 'rollback', got {action!r}"
                )
            self.confirm_label.value = question
            self.confirm_box.layout.display = "flex"

    def confirm(self) -> bool:
        """Run the action asked for; returns True when it was applied."""
        with self._lock:
            pending, self._pending = self._pending, None
            self.confirm_box.layout.display = "none"
            if pending is None:
                return False
            action, version = pending
            if action == "promote":
                return self._act(f"promote {version}", lambda: self.ep.promote(version))
            return self._act("roll back", self.ep.rollback)

    def cancel(self) -> None:
        """Forget the action asked for."""
        with self._lock:
            self._pending = None
            self.confirm_box.layout.display = "none"

    # -- live plots ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the metrics once, redraw the plot and show the applied weights.

        The refresh thread calls this every ``interval`` seconds; tests call it directly.
        The reads (a Prometheus query or a Kubernetes call may take many seconds to time out)
        run without the lock, so the sliders and buttons keep working meanwhile; the lock is
        held only to bring the controls and the plot up to date.
        """
        reader = self._reader
        with self._lock:
            generation = self._generation
        try:
            frame = reader.metrics(since=self.since, step=self.step)
            predictions = self._predictions()
        except MlshiftError as exc:
            with self._lock:
                self.plot_status.value = (
                    f'<small style="color:{ERROR_COLOR}">metrics unavailable:'
                    f" {html.escape(str(exc))}</small>"
                )
            return
        png = render_png(frame, predictions, f"{self.ep.name}: last {self.since:g} s")
        with self._lock:  # no redraw of the controls while a change is being applied
            if self._stop.is_set() and self._thread is threading.current_thread():
                return  # stopped while reading or drawing: the widget may be closing
            # A change made here since the read began is newer than what the reader saw:
            # showing the reader's weights would snap the sliders back to the old split.
            # The next refresh reads again and picks up changes made elsewhere.
            if generation == self._generation:
                self._sync(reader)
                if reader.weights != self._reported:  # shifted in code, or another notebook
                    self._reported = reader.weights
                    self.status.value = (
                        f"applied: {weights_html(self._reported, self._names)}"
                        f" <small>(changed outside this widget; seen"
                        f" {time.strftime('%H:%M:%S')})</small>"
                    )
            self.plot.value = png
            self.plot.layout.display = ""
            self.refreshes += 1
            self.plot_status.value = (
                f"<small>plots updated {time.strftime('%H:%M:%S')}"
                f"{f', every {self.interval:g} s' if self.running else ''}</small>"
            )

    def _predictions(self) -> pd.DataFrame | None:
        if not self._reader.versions:
            return None
        frame = self._reader.predictions(since=self.since)
        return None if frame.empty else frame

    @property
    def running(self) -> bool:
        """True while the refresh thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the refresh thread (no-op if it runs or the widget is closed)."""
        with self._lock:
            if self._closed or self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name=f"mlshift-slider-{self.ep.name}", daemon=True
            )
            _LIVE.add(self)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # keep refreshing; say what went wrong where it is seen
                log.exception("refreshing the slider plots of %s failed", self.ep.name)
                self.plot_status.value = (
                    f'<small style="color:{ERROR_COLOR}">plot refresh failed:'
                    f" {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</small>"
                )
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the refresh thread and wait for it (up to ``timeout`` seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the slider refresh thread of %s is still drawing", self.ep.name)
        _LIVE.discard(self)

    def close_parts(self) -> None:
        """Stop the thread and close every child widget (``widget.close()`` calls this)."""
        self._closed = True
        self.stop()
        stack = list(self.widget.children)  # every part hangs below the box
        while stack:
            part = stack.pop()
            stack.extend(getattr(part, "children", ()))
            part.close()

    def __repr__(self) -> str:
        weights = ", ".join(f"{v}={w}" for v, w in self.ep.weights.items())
        state = "closed" if self._closed else "live" if self.running else "idle"
        return f"<TrafficSlider {self.ep.name}: {weights or 'no versions'} ({state})>"
