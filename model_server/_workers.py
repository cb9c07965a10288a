"""The parent of a multi-worker model_server: fork the workers, share the port, restart, drain.

The parent stays single-threaded and holds no model and no event loop, so forking it is safe;
it imports the serving stack and the model's library once, so a worker (``_worker``), started or
restarted, only loads the model itself. The port is shared one of two
ways (``Settings.balance``): ``reuseport``, where each worker listens with SO_REUSEPORT and the
kernel spreads new connections by a hash of their addresses, or ``handoff``, where the parent
accepts and passes each connection to the next ready worker in turn over a Unix socket.

Before any worker starts the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a private temporary
directory, so /metrics on any worker sums every worker's counters and histograms (see
``_metrics``); the directory goes when the parent exits. A worker that dies is started again
(its counts stay in the sum) and counted in ``model_server_worker_restarts_total``; one that
cannot load the bundle stops the whole server with its status, as a single process would.
SIGTERM (or a first SIGINT) is passed to every worker as SIGTERM: each drains, then the parent
exits 0; a second SIGINT is passed on as SIGINT, which makes workers stop at once.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from model_server._settings import SHARED_METRICS_ENV, Settings

__all__ = ["Supervisor", "supervise"]

log = logging.getLogger("mlshift.model_server")

_FATAL = (2, 3)  # a worker that could not load the bundle or bind: restarting will not help
_TICK_S = 0.2


@dataclass
class _Worker:
    index: int
    pid: int
    started: float
    channel: socket.socket | None = field(default=None, repr=False)
    was_ready: bool = False


class Supervisor:
    """Run ``count`` workers of ``settings`` until a signal drains them.

    Example:
        >>> Supervisor(parse_settings(["--model-dir", "b"]), 2).run()  # doctest: +SKIP
        0
    """

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.slots = mmap.mmap(-1, count)  # shared with the forked workers: 1 = ready
        self.workers: dict[int, _Worker] = {}
        self.due: dict[int, float] = {}  # index -> when to start it again
        self.failures: dict[int, int] = {}
        self.stopping = False
        self.exit_code = 0
        self.port = settings.port
        self._signals: list[int] = []
        self._interrupts = 0
        self._next = 0
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._restarts: Any = None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Start the workers and supervise them; returns the process exit status."""
        shared = tempfile.mkdtemp(prefix="model_server-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        os.environ[SHARED_METRICS_ENV] = shared
        try:
            return self._run()
        finally:
            shutil.rmtree(shared, ignore_errors=True)

    def _run(self) -> int:
        # Imported only now: prometheus_client picks multiprocess mode from the environment.
        from prometheus_client import Counter, Gauge

        self._restarts = Counter(
            "model_server_worker_restarts",
            "Workers started again after they died.",
            registry=None,
        )
        Gauge(
            "model_server_workers", "Worker processes configured.", registry=None,
            multiprocess_mode="max",
        ).set(self.count)  # fmt: skip
        _preload(self.settings.model_dir)
        try:
            self._listen()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.settings.host, self.settings.port, exc)
            return 3
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake = (wake_r, wake_w)
        self._selector.register(wake_r, selectors.EVENT_READ)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        log.info(
            "starting %d workers on %s:%d (%s)",
            self.count,
            self.settings.host,
            self.port,
            self.settings.balance,
        )
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.workers or (self.due and not self.stopping):
                self._loop_once()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in (*self._wake, self._listener):
                if sock is not None:
                    sock.close()
        return self.exit_code

    def _listen(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.settings.host, self.settings.port, type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )[0]  # fmt: skip
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.settings.balance == "reuseport":
                # Bound, never listening: it holds the port (and resolves port 0) for the
                # workers' listeners without taking any connection itself.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
            else:
                sock.bind(address)
                sock.listen(2048)
                sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self.port = int(sock.getsockname()[1])

    def _loop_once(self) -> None:
        self._watch_listener()
        for key, _ in self._selector.select(self._timeout()):
            if key.fileobj is self._wake[0]:
                with contextlib.suppress(BlockingIOError):
                    while self._wake[0].recv(4096):
                        pass
            else:
                self._accept()
        self._handle_signals()
        self._reap()
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now and not self.stopping:
                del self.due[index]
                self._spawn(index)
        for worker in self.workers.values():
            if self.slots[worker.index] == 1 and not worker.was_ready:
                worker.was_ready = True
                self.failures.pop(worker.index, None)

    def _timeout(self) -> float:
        if not self.due:
            return _TICK_S
        return max(0.0, min(_TICK_S, min(self.due.values()) - time.monotonic()))

    # ------------------------------------------------------------------ workers

    def _spawn(self, index: int) -> None:
        parent_end: socket.socket | None = None
        child_end: socket.socket | None = None
        if self.settings.balance == "handoff":
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            parent_end.setblocking(False)
        self.slots[index] = 0
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            os._exit(self._child(index, child_end, parent_end))
        if child_end is not None:
            child_end.close()
        self.workers[index] = _Worker(index, pid, time.monotonic(), parent_end)
        log.info("worker %d started (pid %d)", index, pid)

    def _child(
        self, index: int, channel: socket.socket | None, parent_end: socket.socket | None
    ) -> int:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            self._selector.close()
            for sock in (*self._wake, self._listener, parent_end):
                if sock is not None:
                    sock.close()
            for other in self.workers.values():
                if other.channel is not None:
                    other.channel.close()
            from model_server._worker import run_worker

            code = run_worker(
                self.settings,
                index=index,
                slots=self.slots,
                port=self.port,
                channel=channel,
                parent_pid=os.getppid(),
            )
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
        return code

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers.values() if w.pid == pid), None)
            if worker is None:
                continue
            del self.workers[worker.index]
            self.slots[worker.index] = 0
            if worker.channel is not None:
                worker.channel.close()
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d (pid %d) exited with %d", worker.index, pid, code)
                continue
            if code in _FATAL and not worker.was_ready:
                log.error("worker %d could not start (status %d); stopping", worker.index, code)
                self.exit_code = code
                self._stop(signal.SIGTERM)
                continue
            failures = self.failures.get(worker.index, 0)
            if time.monotonic() - worker.started < 5.0:
                failures += 1  # dying young again and again: back off, up to 10 s
            self.failures[worker.index] = failures
            delay = 0.0 if failures <= 1 else min(10.0, 0.25 * 2 ** (failures - 2))
            log.warning(
                "worker %d (pid %d) died (status %d); starting it again in %.2f s",
                worker.index,
                pid,
                code,
                delay,
            )
            self._restarts.inc()
            self.due[worker.index] = time.monotonic() + delay

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            if signum == signal.SIGINT:
                self._interrupts += 1
            if not self.stopping:
                log.info("signal %d: draining %d workers", signum, len(self.workers))
                self._stop(signal.SIGTERM)
            elif signum == signal.SIGINT and self._interrupts > 1:
                self._stop(signal.SIGINT)

    def _stop(self, sig: int) -> None:
        self.stopping = True
        self.due.clear()
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)

    # ------------------------------------------------------------------ handoff

    def _watch_listener(self) -> None:
        """Accept only while some worker can take connections (none before the first loads)."""
        if self._listener is None or self.settings.balance != "handoff":
            return
        open_ = any(w.channel is not None for w in self.workers.values())
        ready = open_ and (self.stopping or any(self.slots[i] for i in self.workers))
        try:
            self._selector.get_key(self._listener)
            registered = True
        except KeyError:
            registered = False
        if ready and not registered:
            self._selector.register(self._listener, selectors.EVENT_READ)
        elif not ready and registered:
            self._selector.unregister(self._listener)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again next tick
                log.warning("accept failed: %s", exc)
                return
            with conn:
                self._hand_off(conn)

    def _hand_off(self, conn: socket.socket) -> None:
        """Pass ``conn`` to the next ready worker in turn (any live one while draining)."""
        order = sorted(self.workers.values(), key=lambda w: (w.index - self._next) % self.count)
        ready = [w for w in order if self.slots[w.index] == 1]
        for worker in ready + [w for w in order if w not in ready]:
            if worker.channel is None:
                continue
            try:
                socket.send_fds(worker.channel, [b"c"], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                continue  # this worker's queue is full: it is busy, try the next
            except OSError:
                worker.channel.close()
                worker.channel = None
                continue
            self._next = (worker.index + 1) % self.count
            return
        log.warning("no worker could take a connection; closing it")


def _preload(model_dir: str) -> None:
    """Import the serving stack and the model's library once, before forking.

    Every worker (and every restarted one) then starts from these imports instead of paying
    seconds of its own for them; the model itself is still loaded by each worker.
    """
    import importlib

    import model_server._worker  # noqa: F401  (uvicorn, numpy, the app)
    from model_server._bundle import read_manifest
    from model_server._errors import BundleReadError

    try:
        manifest = read_manifest(model_dir)
    except BundleReadError:
        return  # the workers report it, with the exit status a single process would have
    flavor = {"sklearn": "sklearn.base"}.get(str(manifest.get("flavor")), manifest.get("flavor"))
    serializer = {"skops": "skops.io"}.get(str(manifest.get("serializer")), "cloudpickle")
    # Only libraries model_server knows: the manifest is not trusted to name what to import.
    known = {"sklearn.base", "xgboost", "lightgbm", "skops.io", "cloudpickle"}
    for name in (flavor, serializer):
        if name in known:
            with contextlib.suppress(Exception):
                importlib.import_module(str(name))


def supervise(settings: Settings, count: int) -> int:
    """Serve with ``count`` worker processes; returns the exit status.

    Example:
        >>> supervise(parse_settings(["--model-dir", "b", "--workers", "2"]), 2)  # doctest: +SKIP
        0
    """
    return Supervisor(settings, count).run()
