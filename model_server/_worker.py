"""One worker process of a multi-worker model_server: its own model, batcher and event loop.

Forked by the parent (``_workers``), a worker loads the bundle itself, so each holds one copy
of the model, and only then takes connections: with ``reuseport`` it binds its own listening
socket to the shared port (SO_REUSEPORT), with ``handoff`` it receives accepted connections from
the parent over a Unix socket (SCM_RIGHTS) and hands them to uvicorn's protocol. Readiness is
shared: each worker marks its byte in a shared memory map, and every worker answers ready only
when all bytes are set, so the server is ready only when every worker has its model loaded. A
worker drains on SIGTERM like a single-process server, and also when its parent disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import signal
import socket
from typing import Any

import uvicorn

from model_server._app import ModelApp
from model_server._bundle import LoadedBundle, load_bundle
from model_server._errors import BundleReadError
from model_server._serve import DrainingServer, make_config
from model_server._settings import Settings

__all__ = ["WorkerApp", "WorkerServer", "listen_reuseport", "run_worker"]

log = logging.getLogger("mlshift.model_server")

LOAD_FAILED = 2
"""Exit status of a worker that cannot load the bundle (the parent stops rather than retry)."""
BIND_FAILED = 3
"""Exit status of a worker that cannot listen on the port (uvicorn's startup failure too)."""


class WorkerApp(ModelApp):
    """The model app of one worker: ready only when every worker's byte in ``slots`` is set.

    Example:
        >>> app = WorkerApp(loaded, settings, mmap.mmap(-1, 2), 0)  # doctest: +SKIP
    """

    def __init__(
        self, loaded: LoadedBundle, settings: Settings, slots: mmap.mmap, index: int
    ) -> None:
        self._slots = slots
        self._index = index
        self._all_ready = b"\x01" * len(slots)
        self._own_ready = False
        super().__init__(loaded, settings)

    @property  # type: ignore[override]
    def ready(self) -> bool:
        """This worker serves, and so does every other one."""
        return self._own_ready and self._slots[:] == self._all_ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._own_ready = value
        self._slots[self._index] = 1 if value else 0


class WorkerServer(DrainingServer):
    """The draining server of one worker: handed-off connections, and a drain if orphaned."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: ModelApp,
        grace_period_s: float,
        parent_pid: int,
        channel: socket.socket | None,
    ) -> None:
        super().__init__(config, app, grace_period_s)
        self.parent_pid = parent_pid
        self.channel = channel
        self._factory: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.channel is not None:
            loop = asyncio.get_running_loop()
            config = self.config
            state, app_state = self.server_state, self.lifespan.state

            def factory() -> asyncio.Protocol:
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state=app_state, _loop=loop
                )

            self._factory = factory
            self.channel.setblocking(False)
            loop.add_reader(self.channel.fileno(), self._receive, loop)

    def _receive(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.channel is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, 64, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the parent closed its end
                self._close_channel(loop)
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.setblocking(False)
                loop.create_task(loop.connect_accepted_socket(self._factory, conn))

    def _close_channel(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.channel is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self.channel.fileno())
            self.channel.close()
            self.channel = None

    async def on_tick(self, counter: int) -> bool:
        if os.getppid() != self.parent_pid and self._drain_started is None:
            log.warning("the parent process is gone; draining this worker")
            self.handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Take no more handed-off connections; the parent gives them to another worker.
        self._close_channel(asyncio.get_running_loop())
        await super().shutdown(sockets=sockets)


def listen_reuseport(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that shares the port with the other workers.

    Example:
        >>> listen_reuseport("127.0.0.1", 8080)  # doctest: +SKIP
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def run_worker(
    settings: Settings,
    *,
    index: int,
    slots: mmap.mmap,
    port: int,
    channel: socket.socket | None,
    parent_pid: int,
) -> int:
    """Load the bundle, then serve on the shared port (or handed-off connections) until drained.

    Returns the worker's exit status: 0 after a drain, ``LOAD_FAILED`` or ``BIND_FAILED``.

    Example:
        >>> run_worker(s, index=0, slots=m, port=80, channel=None, parent_pid=1)  # doctest: +SKIP
        0
    """
    try:
        loaded = load_bundle(
            settings.model_dir,
            trust_pickle=settings.trust_pickle,
            trust_types=settings.trust_types,
            signing_key=settings.signing_key,
        )
    except BundleReadError as exc:
        log.error("cannot serve: %s", exc)
        return LOAD_FAILED
    app = WorkerApp(loaded, settings, slots, index)
    sockets: list[socket.socket] = []
    if channel is None:
        try:
            sockets = [listen_reuseport(settings.host, port)]
        except OSError as exc:
            log.error("worker %d cannot listen on %s:%d: %s", index, settings.host, port, exc)
            return BIND_FAILED
    server = WorkerServer(
        make_config(app, settings), app, settings.grace_period_s, parent_pid, channel
    )
    server.run(sockets=sockets)
    return 0
