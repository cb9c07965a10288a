"""What one endpoint of the local mesh keeps on disk, and how it is read back.

``<home>/endpoints/<name>/`` holds ``state.json`` (the applied ``EndpointState`` and the
traffic history), ``objects/`` (the Istio objects as last applied: ``virtualservice.json``,
``destinationrule.json``, ``service.json``, ``deployments/<version>.json``), ``bundles/``,
``run/`` (one process record and log per version), ``envoy/`` (bootstrap, xDS files, Envoy's
record and log), ``router-port`` and ``metrics.jsonl``. Every write goes to a temp file that
is renamed into place, so a process that dies mid-write never leaves half a file for the
next process to read.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from mlshift._exceptions import MlshiftError
from mlshift._state import EndpointState, TrafficState
from mlshift.local._ownership import Expected, ProcessRecord, owned, read_record
from mlshift.local._processes import free_port

__all__ = ["EndpointFiles", "read_json", "replace_file", "write_json"]

# One lock per endpoint directory: an RLock for this process's threads (flock does not tell
# two threads apart), and a depth per thread so a nested hold does not flock twice.
_GUARD = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}
_HELD = threading.local()


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (other processes wait)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process at a time is on the user
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux), or None where there is none."""
    if sys.platform != "linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def replace_file(tmp: Path, dest: Path, data: bytes) -> None:
    """Put ``data`` at ``dest`` atomically: write the new file ``tmp``, then swap it in.

    Readers (and Envoy, which watches for a file renamed into place) see the old file or the
    new one, never half of one and never none. No fsync: a shift must take milliseconds, and
    only a crash of the whole machine can lose the last change (as with any unsynced save).

    On Linux the two files are exchanged (``renameat2`` with ``RENAME_EXCHANGE``) and the
    old one then removed: a plain rename over an existing file makes ext4 write the new
    file's data out first (its ``auto_da_alloc`` safeguard), which on a busy disk holds
    each of a shift's three writes for milliseconds. Elsewhere, or where the file system
    cannot exchange, ``os.replace``.
    """
    tmp.unlink(missing_ok=True)  # a new file: rewriting one in place also makes ext4 flush
    tmp.write_bytes(data)
    exchange = _renameat2()
    if exchange is not None:
        if (
            exchange(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(dest), _RENAME_EXCHANGE)
            == 0
        ):
            tmp.unlink(missing_ok=True)  # now the old contents
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EPERM):
            raise OSError(code, os.strerror(code), str(dest))
    os.replace(tmp, dest)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see ``replace_file``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    replace_file(
        tmp, path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )


def read_json(path: Path) -> Any:
    """Return the JSON at ``path``, or None when there is no such file.

    Raises:
        MlshiftError: the file exists but cannot be read or parsed.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # Not "remove the directory": that would orphan the endpoint's processes, which keep
        # serving. ep.delete() works without readable state and stops them first.
        raise MlshiftError(
            f"{path} is unreadable ({exc}); ep.delete() stops the endpoint's processes and "
            "removes its state, then deploy again"
        ) from exc


class EndpointFiles:
    """The state directory of one endpoint.

    Example:
        >>> EndpointFiles(Path("/tmp/h/endpoints/churn")).record_path("v1")
        PosixPath('/tmp/h/endpoints/churn/run/v1.json')
    """

    def __init__(self, root: Path) -> None:
        # Absolute: paths on the processes' command lines prove they are this endpoint's.
        self.root = Path(os.path.abspath(root))

    @property
    def envoy_dir(self) -> Path:
        """Where the endpoint's Envoy keeps its bootstrap, xDS files, record and log."""
        return self.root / "envoy"

    @property
    def run_dir(self) -> Path:
        """Where process records and server logs live."""
        return self.root / "run"

    def object_path(self, kind: str, name: str = "") -> Path:
        """Where the last applied object of ``kind`` (Deployment, a version's Service: called
        ``name``) is kept."""
        if kind == "Deployment":
            return self.root / "objects" / "deployments" / f"{name}.json"
        if kind == "Service" and name:
            return self.root / "objects" / "services" / f"{name}.json"
        return self.root / "objects" / f"{kind.lower()}.json"

    def stored(self, kind: str, name: str = "") -> dict[str, Any] | None:
        """Return the object of ``kind`` as last applied (Deployment: by name), or None."""
        data = read_json(self.object_path(kind, name))
        return data if isinstance(data, dict) else None

    def record_path(self, version: str) -> Path:
        """Where the process record of ``version`` is kept."""
        return self.run_dir / f"{version}.json"

    def record(self, version: str) -> ProcessRecord | None:
        """The process record of ``version`` (alive or not), or None."""
        return read_record(self.record_path(version))

    def server(self, version: str) -> Expected:
        """The command line of this endpoint's ``model_server`` of ``version``."""
        return Expected.model_server(self.root.name, version)

    def running_envoy(self) -> ProcessRecord | None:
        """The record of the endpoint's Envoy when it runs and is provably this endpoint's."""
        record = read_record(self.envoy_dir / "envoy.json")
        expected = Expected.envoy(self.envoy_dir / "bootstrap.json")
        return record if owned(record, expected) else None

    def records(self) -> dict[str, ProcessRecord]:
        """Every readable process record in ``run/``, by version (whatever the state says)."""
        out: dict[str, ProcessRecord] = {}
        for path in sorted(self.run_dir.glob("*.json")):
            record = read_record(path)
            if record is not None:
                out[path.stem] = record
        return out

    def ports(self) -> dict[str, int]:
        """Return ``{version: port}`` of every version that has a process record."""
        return {version: record.port for version, record in self.records().items()}

    def save_state(self, state: EndpointState, history: tuple[TrafficState, ...]) -> None:
        """Store the applied state and the traffic history (newest last)."""
        write_json(
            self.root / "state.json",
            {"state": state.to_json(), "history": [h.to_json() for h in history]},
        )

    def load_state(self) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Return the stored state and history, or None when the endpoint has none.

        Raises:
            MlshiftError: the stored state is damaged.
        """
        data = read_json(self.root / "state.json")
        if not data:
            return None
        try:
            state = EndpointState.from_json(data["state"])
            history = tuple(TrafficState.from_json(h) for h in data.get("history") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise MlshiftError(
                f"the stored state of endpoint {self.root.name!r} is damaged ({exc}); "
                "ep.delete() stops its processes and removes it, then deploy again"
            ) from exc
        return state, history

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the endpoint's lock: one change at a time, across processes and threads.

        Re-entrant within a thread, so a verb can hold it from its read to its write while
        the plan it runs takes it again.

        Example:
            >>> with files.lock():  # doctest: +SKIP
            ...     files.save_state(state, history)
        """
        key = str(self.root)
        with _GUARD:
            local = _LOCKS.setdefault(key, threading.RLock())
        with local:
            depth: dict[str, int] = _HELD.__dict__.setdefault("depth", {})
            if depth.get(key):
                depth[key] += 1
                try:
                    yield
                finally:
                    depth[key] -= 1
                return
            self.root.mkdir(parents=True, exist_ok=True)
            depth[key] = 1
            try:
                with _flock(self.root / ".lock"):
                    yield
            finally:
                depth[key] = 0

    def router_port(self, requested: int | None) -> int:
        """The router's port: the running Envoy's, else the one kept here, else ``requested``
        or a free one (then kept, so the endpoint's address survives restarts).

        Example:
            >>> files.router_port(None)  # doctest: +SKIP
            38121
        """
        path = self.root / "router-port"
        running = self.running_envoy()
        if running is not None:
            return running.port
        with contextlib.suppress(OSError, ValueError):
            kept = int(path.read_text())
            if requested is None or requested == kept:
                return kept
        port = requested or free_port()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(port))
        return port
