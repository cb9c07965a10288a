"""Run the app under uvicorn (uvloop + httptools) with a drain-first SIGTERM.

On SIGTERM (or SIGINT) readiness turns false at once, requests keep being answered, and once
nothing is in flight (or the grace period ran out) uvicorn stops accepting and exits 0. A second
SIGINT forces the exit.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from types import FrameType

import uvicorn

from model_server._app import ModelApp
from model_server._settings import Settings

__all__ = ["DrainingServer", "make_config", "serve"]

log = logging.getLogger("mlshift.model_server")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain-first shutdown (readiness false, then wait, then stop)."""

    def __init__(self, config: uvicorn.Config, app: ModelApp, grace_period_s: float) -> None:
        super().__init__(config)
        self.model_app = app
        self.grace_period_s = grace_period_s
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's own handler, the signal is not re-raised after shutdown: a
        # drained exit is a clean exit, status 0.
        if self._drain_started is not None:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self._drain_started = time.monotonic()
        self.model_app.start_draining()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            waited = time.monotonic() - self._drain_started
            if self.model_app.inflight == 0 or waited >= self.grace_period_s:
                if self.model_app.inflight:
                    log.warning(
                        "grace period of %.1f s is over with %d requests in flight; exiting",
                        self.grace_period_s,
                        self.model_app.inflight,
                    )
                remaining = self.grace_period_s - waited
                self.config.timeout_graceful_shutdown = max(1, math.ceil(remaining))
                self.should_exit = True
        return await super().on_tick(counter)


def make_config(app: ModelApp, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration every model_server process runs with (uvloop, httptools).

    Example:
        >>> make_config(app, settings).loop  # doctest: +SKIP
        'uvloop'
    """
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=max(1, math.ceil(settings.grace_period_s)),
        server_header=False,
        # Nothing reads the client's address, so X-Forwarded-* is not parsed on every request.
        proxy_headers=False,
    )


def serve(app: ModelApp, settings: Settings) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain and return.

    Example:
        >>> serve(create_app(load_bundle("b"), settings), settings)  # doctest: +SKIP
    """
    DrainingServer(make_config(app, settings), app, settings.grace_period_s).run()
