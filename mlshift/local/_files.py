"""What one endpoint of the local mesh keeps on disk, and how it is read back.

``<home>/endpoints/<name>/`` holds ``state.json`` (the applied ``EndpointState`` and the
traffic history), ``objects/`` (the Istio objects as last applied: ``virtualservice.json``,
``destinationrule.json``, ``service.json``, ``deployments/<version>.json``), ``bundles/``,
``run/`` (one process record and log per version), ``envoy/`` (bootstrap, xDS files, Envoy's
record and log), ``router-port`` and ``metrics.jsonl``. Every write goes to a temp file that
is fsynced and renamed, so a crash never leaves half a file for the next process to read.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlshift._exceptions import MlshiftError
from mlshift._state import EndpointState, TrafficState
from mlshift.local import _processes as procs

__all__ = ["EndpointFiles", "read_json", "write_json"]


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        raise MlshiftError(
            f"{path} is unreadable ({exc}); remove it, or the endpoint's directory, and deploy "
            "again"
        ) from exc


class EndpointFiles:
    """The state directory of one endpoint.

    Example:
        >>> EndpointFiles(Path("/tmp/h/endpoints/churn")).record_path("v1")
        PosixPath('/tmp/h/endpoints/churn/run/v1.json')
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def run_dir(self) -> Path:
        """Where process records and server logs live."""
        return self.root / "run"

    def object_path(self, kind: str, name: str = "") -> Path:
        """Where the last applied object of ``kind`` (Deployment: called ``name``) is kept."""
        if kind == "Deployment":
            return self.root / "objects" / "deployments" / f"{name}.json"
        return self.root / "objects" / f"{kind.lower()}.json"

    def stored(self, kind: str, name: str = "") -> dict[str, Any] | None:
        """Return the object of ``kind`` as last applied (Deployment: by name), or None."""
        data = read_json(self.object_path(kind, name))
        return data if isinstance(data, dict) else None

    def record_path(self, version: str) -> Path:
        """Where the process record of ``version`` is kept."""
        return self.run_dir / f"{version}.json"

    def record(self, version: str) -> procs.ProcessRecord | None:
        """The process record of ``version`` (alive or not), or None."""
        return procs.read_record(self.record_path(version))

    def ports(self) -> dict[str, int]:
        """Return ``{version: port}`` of every version that has a process record."""
        out: dict[str, int] = {}
        for path in self.run_dir.glob("*.json"):
            record = procs.read_record(path)
            if record is not None:
                out[path.stem] = record.port
        return out

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
                f"the stored state of endpoint {self.root.name!r} is damaged ({exc}); delete "
                f"{self.root} and deploy again"
            ) from exc
        return state, history

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the endpoint's lock: one plan at a time, across processes.

        Example:
            >>> with files.lock():  # doctest: +SKIP
            ...     files.save_state(state, history)
        """
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one process at a time is on the user
            yield
            return
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def router_port(self, requested: int | None) -> int:
        """The router's port: the running Envoy's, else the one kept here, else ``requested``
        or a free one (then kept, so the endpoint's address survives restarts).

        Example:
            >>> files.router_port(None)  # doctest: +SKIP
            38121
        """
        path = self.root / "router-port"
        running = procs.read_record(self.root / "envoy" / "envoy.json")
        if procs.alive(running) and running is not None:
            return running.port
        with contextlib.suppress(OSError, ValueError):
            kept = int(path.read_text())
            if requested is None or requested == kept:
                return kept
        port = requested or procs.free_port()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(port))
        return port
