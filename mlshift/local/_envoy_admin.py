"""Envoy's admin interface: where it listens, and the client ``Router`` asks it through.

The admin interface can stop Envoy, drain its listener and dump its config, so it is not on a
TCP port (which every local user could reach): it is a Unix socket, mode 0600, in the
endpoint's ``envoy/`` directory (itself 0700), spoken to over HTTP on the socket. A state
directory too deep for a socket address (about 100 bytes) gets its socket in a private
directory of the user's under the temp dir instead. Windows has no Unix sockets for this, so
there the admin stays on a loopback TCP port.

``EnvoyAdmin`` is the base class of ``Router`` (``_envoy``), which says where the running
Envoy's admin is; it reads pages and stats, Envoy's health checks, and tells a router that runs
but serves nothing (``listening``: its listener drained; ``route_count``: its routes lost).

The admin is asked on the hot path of every shift (is the version gaining weight healthy? did
Envoy take the new routes?), so it is spoken to with the standard library's ``http.client``
over kept-alive connections (a small pool: the sampler thread and a verb ask at once): about a
quarter of the CPU an httpx request costs, which on a busy 2-core machine is most of a shift.
"""

from __future__ import annotations

import abc
import hashlib
import http.client
import os
import socket
import stat
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlshift._exceptions import LocalModeError, RoutingError

__all__ = ["UNIX_ADMIN", "AdminResponse", "EnvoyAdmin", "admin_socket_path"]

# Windows: no Unix socket admin (Envoy's Windows build and Python's AF_UNIX support there are
# partial), so the admin falls back to a loopback TCP port, reachable by every local user.
UNIX_ADMIN = os.name != "nt" and hasattr(socket, "AF_UNIX")
# A socket address holds 108 bytes on Linux and 104 on macOS, with its terminating NUL.
_MAX_SOCKET_PATH = 100


def admin_socket_path(envoy_dir: Path) -> Path:
    """Where the Envoy of ``envoy_dir`` listens for admin requests (a Unix socket).

    ``admin.sock`` in ``envoy_dir``; when that path is too long for a socket address, a file
    named by a hash of ``envoy_dir`` in ``<tmp>/mlshift-<uid>/``, a directory only this user
    may enter (made so, or refused when someone else owns it).

    Raises:
        LocalModeError: that private directory exists and is not this user's own.

    Example:
        >>> admin_socket_path(Path("/home/me/.mlshift/endpoints/churn/envoy"))
        PosixPath('/home/me/.mlshift/endpoints/churn/envoy/admin.sock')
    """
    path = envoy_dir / "admin.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    private = Path(tempfile.gettempdir()) / f"mlshift-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(private)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LocalModeError(
            f"{private} is not a directory of this user's, so the router's admin socket cannot "
            "be put there safely; remove it, or set MLSHIFT_HOME to a shorter path"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(private, 0o700)
    digest = hashlib.sha256(os.fsencode(os.path.abspath(envoy_dir))).hexdigest()[:24]
    return private / f"{digest}.sock"


@dataclass(frozen=True)
class AdminResponse:
    """One answer of Envoy's admin: its status code and body."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.content)


class _Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection to Envoy's admin at ``unix:/path`` or ``host:port``."""

    def __init__(self, address: str, timeout: float) -> None:
        self._socket_path = address.removeprefix("unix:") if address.startswith("unix:") else ""
        if self._socket_path:
            super().__init__("envoy-admin", timeout=timeout)  # the Host header only
        else:
            host, _, port = address.rpartition(":")
            super().__init__(host, int(port), timeout=timeout)

    def connect(self) -> None:
        if not self._socket_path:
            super().connect()
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _AdminPool:
    """Kept-alive connections to one admin address, each used by one thread at a time."""

    def __init__(self, address: str, timeout: float = 2.0) -> None:
        self.address = address
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def request(self, method: str, target: str) -> AdminResponse:
        """Send one request; a kept-alive connection Envoy closed meanwhile is retried once."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        for fresh in (False, True) if conn is not None else (True,):
            if fresh:
                conn = _Connection(self.address, self._timeout)
            assert conn is not None
            try:
                conn.request(method, target)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if fresh:
                    raise
                continue
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return AdminResponse(response.status, body)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class EnvoyAdmin(abc.ABC):
    """Asks one endpoint's Envoy through its admin interface; the base class of ``Router``.

    Where the admin listens comes from the running Envoy's record (``_recorded_admin``, which
    ``Router`` provides) and is kept until a request fails or Envoy is started again.

    Args:
        port: the router port, whose listener ``listening`` checks.
        log_path: Envoy's log, named in messages.
    """

    def __init__(self, *, port: int, log_path: Path) -> None:
        self.port = port
        self._log_path = log_path
        # One client per admin address, closed only by close(): the sampler thread and a verb
        # use the router at once, and the address changes only when a TCP admin (Windows)
        # comes back on another port. The socket path never changes.
        self._clients: dict[str, _AdminPool] = {}
        self._clients_lock = threading.Lock()
        self._admin_address = ""  # the running Envoy's, as last read from its record

    @abc.abstractmethod
    def _recorded_admin(self) -> str:
        """The running Envoy's admin address as its record has it ('' when none runs)."""

    @property
    def admin(self) -> str:
        """Where Envoy's admin listens (``unix:/.../admin.sock``; ``127.0.0.1:PORT`` on
        Windows)."""
        if not self._admin_address:
            address = self._recorded_admin()
            if not address:
                raise RoutingError(
                    f"the router of this endpoint is not running (see {self._log_path}); "
                    "ep.revive() or any change (ep.shift, ep.deploy) starts it again"
                )
            self._admin_address = address
        return self._admin_address

    def _admin_for(self, address: str) -> _AdminPool:
        with self._clients_lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = _AdminPool(address)
            return client

    def _ready(self, admin: str) -> bool:
        try:
            return self._admin_for(admin).request("GET", "/ready").status_code == 200
        except (OSError, http.client.HTTPException):
            return False

    def close(self) -> None:
        """Close the admin HTTP client (Envoy keeps running)."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def listening(self) -> bool:
        """Tell whether the running Envoy still accepts requests on the router port.

        After ``/drain_listeners`` Envoy runs on, its ``/ready`` still says LIVE, but its
        listener is stopped (``listener_manager.listener_stopped``) and the port refuses
        connections; both are checked (another program may have taken the port since).
        """
        try:
            stats = self.stats(r"^listener_manager\.(listener_stopped|total_listeners_draining)$")
        except RoutingError:
            return False
        if any(int(value or 0) for value in stats.values()):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def route_count(self) -> int:
        """How many routes Envoy serves right now (0: every request gets 404).

        Raises:
            RoutingError: Envoy is not running or does not answer.
        """
        dump = self.get("/config_dump", resource="dynamic_route_configs").json()
        return sum(
            len(host.get("routes") or ())
            for config in dump.get("configs") or ()
            for host in (config.get("route_config") or {}).get("virtual_hosts") or ()
        )

    def get(self, path: str, **params: str) -> AdminResponse:
        """GET an admin page (``/stats``, ``/clusters?format=json``...).

        Raises:
            RoutingError: Envoy is not running or does not answer.
        """
        target = f"{path}?{urllib.parse.urlencode(params)}" if params else path
        try:
            response = self._admin_for(self.admin).request("GET", target)
        except (OSError, http.client.HTTPException) as exc:
            self._admin_address = ""  # read again from the record next time
            raise RoutingError(
                f"Envoy's admin did not answer {path}: {exc!r}; see {self._log_path}"
            ) from exc
        if response.status_code >= 400:
            raise RoutingError(
                f"Envoy's admin answered {response.status_code} to {path}: "
                f"{response.text[:200]}; see {self._log_path}"
            )
        return response

    def stats(self, pattern: str) -> dict[str, Any]:
        """Return the stats whose names match the regex ``pattern`` as {name: value}."""
        data = self.get("/stats", format="json", filter=pattern).json()
        return {s["name"]: s.get("value") for s in data.get("stats", ()) if "name" in s}

    def host_health(self) -> dict[str, bool]:
        """Return {cluster: healthy?} as Envoy's active health checks see it."""
        data = self.get("/clusters", format="json").json()
        out: dict[str, bool] = {}
        for cluster in data.get("cluster_statuses", ()):
            hosts = cluster.get("host_statuses") or ()
            out[cluster["name"]] = bool(hosts) and all(
                not any(v is True for v in (h.get("health_status") or {}).values())
                and (h.get("health_status") or {}).get("eds_health_status", "HEALTHY") == "HEALTHY"
                for h in hosts
            )
        return out
