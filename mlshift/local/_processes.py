"""Processes of the local mesh: start them detached, wait until they serve, stop only our own.

Every process (a version's ``model_server``, the endpoint's Envoy) is started in a session of
its own, so it outlives the notebook that started it and a new Python process can reattach. A
record (pid, port, creation time, see ``_ownership``) is kept as JSON in the endpoint's state
directory, and nothing is signalled unless ``_ownership.identify`` proves the record's process
is the one mlshift started. Output goes to a log file whose tail explains a process that would
not start or that crashed. Stopping sends SIGTERM (a model server drains in-flight requests),
then SIGKILL, through psutil, which refuses to signal a pid reused in between.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from mlshift._exceptions import LocalModeError, NotReadyError
from mlshift.local._ownership import (
    CHILDREN,
    Expected,
    ProcessRecord,
    alive,
    create_time,
    exit_reason,
    identify,
)

__all__ = [
    "VERSION_HEADER",
    "answers_as",
    "free_port",
    "log_tail",
    "port_in_use",
    "spawn",
    "start_model_server",
    "stop",
    "wait_ready",
]

log = logging.getLogger("mlshift.local")

VERSION_HEADER = "x-mlshift-version"
"""The header every model_server response carries, naming the version it serves."""


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
    CHILDREN[proc.pid] = proc
    record = ProcessRecord(proc.pid, port, create_time(proc.pid), str(log_path), extra)
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
    trust_pickle: bool = False,
    workers: int = 1,
) -> ProcessRecord:
    """Start ``model_server`` for one version on a free loopback port (not in ``avoid_ports``).

    ``trust_pickle`` lets it load a cloudpickle bundle; pass it only for a version whose
    deployer said so (``VersionSpec.trust_pickle``). ``workers`` processes serve it (one by
    default: a laptop runs several versions at once).

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
        *(["--trust-pickle"] if trust_pickle else []),
        "--workers",
        str(workers),
    ]
    return spawn(
        cmd,
        log_path=run_dir / f"{version}.log",
        record_path=run_dir / f"{version}.json",
        port=port,
        # Only the flag decides: a variable left in the notebook's environment does not.
        env={"MLSHIFT_TRUST_PICKLE": ""},
        extra={"bundle": str(bundle)},
    )


def answers_as(response: httpx.Response, version: str) -> str:
    """Return '' when ``response`` comes from a model_server of ``version``, else who answered.

    ``free_port`` closes its socket before the server binds it, so another program may take
    the port in between; it must not be taken for the version (a 404 naming another model is
    another endpoint's server of the same version name).
    """
    answered = response.headers.get(VERSION_HEADER)
    if answered == version and response.status_code != 404:
        return ""
    label = f"{VERSION_HEADER}: {answered}" if answered else f"no {VERSION_HEADER} header"
    return f"HTTP {response.status_code}, {label}"


def wait_ready(
    record: ProcessRecord, *, what: str, name: str, version: str, timeout_s: float = 60.0
) -> None:
    """Wait until the server of ``record`` answers 200 on ``/v2/models/<name>/ready`` as
    ``version`` (its ``x-mlshift-version`` header).

    Raises:
        NotReadyError: the process exited or did not get ready in time, or another server
            answers on its port; carries the log tail.
    """
    url = f"http://127.0.0.1:{record.port}/v2/models/{name}/ready"
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    impostor = ""
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if not alive(record):
                reason = exit_reason(record) + impostor
                tail = log_tail(record.log)
                raise NotReadyError(
                    f"{what} did not start: {reason}. Last lines of {record.log}:\n{tail}",
                    reason=reason,
                )
            try:
                response = client.get(url)
            except httpx.HTTPError:
                pass
            else:
                other = answers_as(response, version)
                if not other and response.status_code == 200:
                    return
                if other:
                    impostor = (
                        f"; another server answers on its port {record.port} ({other}), so "
                        "it cannot be routed to; deploy the version again to pick another port"
                    )
            if time.monotonic() > deadline:
                tail = log_tail(record.log)
                raise NotReadyError(
                    f"{what} was not ready after {timeout_s:.0f} s (port {record.port})"
                    f"{impostor}; see {record.log}:\n{tail}",
                    reason="another server on its port" if impostor else "readiness timeout",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


def stop(record: ProcessRecord | None, expected: Expected, *, grace_s: float = 10.0) -> bool:
    """Stop the process of ``record`` if it is provably ``expected``: SIGTERM, wait up to
    ``grace_s``, then SIGKILL. Returns whether it was signalled.

    A record whose process is gone is forgotten; one that cannot be proven to be ``expected``
    (no start time, another command line, another user's) is reported and never signalled.

    Example:
        >>> server = Expected.model_server("churn", "v1")
        >>> stop(read_record(run / "v1.json"), server)  # doctest: +SKIP
        True
    """
    if record is None:
        return False
    found = identify(record, expected)
    proc = found.process
    if proc is None:
        if not found.exited:
            log.warning("not stopping pid %d: %s", record.pid, found.reason)
        _reap(record.pid)
        return False
    try:
        proc.terminate()  # psutil checks the pid still names this process before signalling
    except psutil.NoSuchProcess:
        _reap(record.pid)
        return True
    except psutil.AccessDenied as exc:
        log.warning("cannot stop pid %d (%s): %s", record.pid, expected.what, exc)
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if _ended(proc):
            _reap(record.pid)
            return True
        time.sleep(0.02)
    log.warning("pid %d did not stop within %.0f s of SIGTERM; killing it", record.pid, grace_s)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc.kill()
    for _ in range(250):
        if _ended(proc):
            break
        time.sleep(0.02)
    _reap(record.pid)
    return True


def _ended(proc: psutil.Process) -> bool:
    child = CHILDREN.get(proc.pid)
    if child is not None:
        return child.poll() is not None
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _reap(pid: int) -> None:
    child = CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
