"""Processes of the local mesh: start them detached, find them again, stop them for sure.

Every process (a version's ``model_server``, the endpoint's Envoy) is started in a session of
its own, so it outlives the notebook that started it and a new Python process can reattach. A
record (pid, port, creation time) is kept as JSON in the endpoint's state directory; the
creation time psutil reports (epoch seconds, on Linux and macOS alike) tells a live
process from a stale record whose pid was reused, and a zombie counts as exited. Output
goes to a log file whose tail explains a process that would not start. Stopping sends SIGTERM
(a model server drains in-flight requests), then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from mlshift._exceptions import LocalModeError, NotReadyError

__all__ = [
    "ProcessRecord",
    "alive",
    "exit_reason",
    "free_port",
    "log_tail",
    "port_in_use",
    "read_record",
    "spawn",
    "start_model_server",
    "stop",
    "wait_ready",
]

log = logging.getLogger("mlshift.local")

# Popen objects of the processes this Python process started: kept so exited children are
# reaped (no zombies that still look alive) and their exit codes can be reported.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# On Linux psutil adds the start in clock ticks (1/100 s) to the boot time, so reads of one
# process agree to well within this; a pid is reused only once the kernel cycled through the rest.
_SAME_PROCESS_S = 0.01


@dataclass(frozen=True)
class ProcessRecord:
    """A process of the local mesh as written to its record file."""

    pid: int
    port: int
    started: float | None
    """When the process was created, epoch seconds (``psutil.Process.create_time()``).

    With ``pid`` it names one process: a pid reused later has another creation time. None
    where unknown (the process was gone before it could be read)."""
    log: str
    extra: Mapping[str, str | int] | None = None

    def save(self, path: Path) -> None:
        """Write the record atomically (temp file + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


def read_record(path: Path) -> ProcessRecord | None:
    """Return the record at ``path``, or None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(
            pid=int(data["pid"]),
            port=int(data["port"]),
            started=data.get("started"),
            log=str(data.get("log") or ""),
            extra=data.get("extra"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create_time(pid: int) -> float | None:
    """When ``pid`` was created, epoch seconds, or None when it is gone or cannot be read."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def alive(record: ProcessRecord | None) -> bool:
    """Tell whether the process of ``record`` still runs (and is the same process).

    Example:
        >>> alive(read_record(run_dir / "v1.json"))  # doctest: +SKIP
        True
    """
    if record is None or record.pid <= 0:
        return False
    child = _CHILDREN.get(record.pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        proc = psutil.Process(record.pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False  # it has exited; only its exit status is left
            if record.started is None:
                return True
            return abs(proc.create_time() - record.started) < _SAME_PROCESS_S
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return False


def exit_reason(record: ProcessRecord) -> str:
    """Say why the process of ``record`` is not running (``process exited (code -9)``)."""
    child = _CHILDREN.get(record.pid)
    if child is not None:
        # Just killed, it may still be a zombie for a moment before it can be reaped.
        with contextlib.suppress(subprocess.TimeoutExpired):
            return f"process exited (code {child.wait(timeout=1.0)})"
    return f"process {record.pid} is gone (stale record)"


def free_port(avoid: Collection[int] = ()) -> int:
    """Return a TCP port on 127.0.0.1 that is free right now and not in ``avoid``.

    ``avoid`` holds ports that are spoken for but maybe not bound yet (a router's).
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def port_in_use(port: int) -> bool:
    """Tell whether something already listens on (or holds) 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Envoy does: connections of a previous router in TIME_WAIT do not block the port,
        # a listening socket still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def log_tail(path: str | Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    cmd: Sequence[str],
    *,
    log_path: Path,
    record_path: Path,
    port: int,
    env: Mapping[str, str] | None = None,
    extra: Mapping[str, str | int] | None = None,
) -> ProcessRecord:
    """Start ``cmd`` detached (own session), output to ``log_path``, and write its record."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise LocalModeError(
                f"cannot start {cmd[0]!r}: {exc}; check that it exists and is executable"
            ) from exc
    _CHILDREN[proc.pid] = proc
    record = ProcessRecord(proc.pid, port, _create_time(proc.pid), str(log_path), extra)
    record.save(record_path)
    log.debug("started %s (pid %d, port %d)", cmd[0], proc.pid, port)
    return record


def start_model_server(
    bundle: str | Path,
    *,
    name: str,
    version: str,
    run_dir: Path,
    grace_period_s: float = 5.0,
    avoid_ports: Collection[int] = (),
) -> ProcessRecord:
    """Start ``model_server`` for one version on a free loopback port (not in ``avoid_ports``).

    The record goes to ``run_dir/<version>.json`` and the output to ``run_dir/<version>.log``.

    Example:
        >>> start_model_server("b/v1", name="churn", version="v1", run_dir=run)  # doctest: +SKIP
    """
    port = free_port(avoid_ports)
    cmd = [
        sys.executable,
        "-m",
        "model_server",
        "--model-dir",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--name",
        name,
        "--version",
        version,
        "--grace-period-s",
        str(grace_period_s),
    ]
    return spawn(
        cmd,
        log_path=run_dir / f"{version}.log",
        record_path=run_dir / f"{version}.json",
        port=port,
        extra={"bundle": str(bundle)},
    )


def wait_ready(record: ProcessRecord, *, what: str, timeout_s: float = 60.0) -> None:
    """Wait until the server of ``record`` answers 200 on ``/v2/health/ready``.

    Raises:
        NotReadyError: the process exited or did not get ready in time; carries the log tail.
    """
    url = f"http://127.0.0.1:{record.port}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if not alive(record):
                reason = exit_reason(record)
                tail = log_tail(record.log)
                raise NotReadyError(
                    f"{what} did not start: {reason}. Last lines of {record.log}:\n{tail}",
                    reason=reason,
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                tail = log_tail(record.log)
                raise NotReadyError(
                    f"{what} was not ready after {timeout_s:.0f} s (port {record.port}); "
                    f"see {record.log}:\n{tail}",
                    reason="readiness timeout",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


def stop(record: ProcessRecord | None, *, grace_s: float = 10.0) -> None:
    """Stop the process of ``record``: SIGTERM, wait up to ``grace_s``, then SIGKILL.

    A record whose process is already gone (or was replaced by another) is left alone.
    """
    if record is None or not alive(record):
        if record is not None:
            _reap(record.pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(record):
            _reap(record.pid)
            return
        time.sleep(0.02)
    log.warning("pid %d did not stop within %.0f s of SIGTERM; killing it", record.pid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows: no SIGKILL
    for _ in range(250):
        if not alive(record):
            break
        time.sleep(0.02)
    _reap(record.pid)


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
