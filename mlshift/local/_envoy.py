"""One endpoint's Envoy: start it detached, keep it serving, and reload its config.

Envoy (found by ``_envoy_binary``) is started from a bootstrap (``_envoy_bootstrap``) whose
clusters and routes come from watched files; ``Router.write_clusters`` and
``Router.write_routes`` write a temp file and rename it into the watched directory, then wait
until Envoy's admin reports the new ``version_text`` (accepted) or a new ``update_rejected``
(refused; Envoy keeps the old config and the reason is read from its log).

Each endpoint gets its own Envoy: its router port, its admin, its stats, its log, and
``delete`` simply stops it; a broken config of one endpoint cannot take another one down.
Envoy runs one or two worker threads (``$MLSHIFT_ENVOY_CONCURRENCY`` changes that). Its admin
interface (a private Unix socket; loopback TCP on Windows) and the reads through it are in
``_envoy_admin``: ``Router`` is an ``EnvoyAdmin``; ``Router.ensure_serving`` restarts an Envoy
that runs but no longer listens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlshift._exceptions import LocalModeError, RoutingError
from mlshift.local import _processes as procs
from mlshift.local import _xds as xds
from mlshift.local._envoy_admin import UNIX_ADMIN, EnvoyAdmin, admin_socket_path
from mlshift.local._envoy_binary import find_envoy
from mlshift.local._envoy_bootstrap import bootstrap
from mlshift.local._files import replace_file
from mlshift.local._ownership import Expected, ProcessRecord, alive, exit_reason, owned, read_record

__all__ = ["CONCURRENCY_ENV_VAR", "Router"]

log = logging.getLogger("mlshift.local")

CONCURRENCY_ENV_VAR = "MLSHIFT_ENVOY_CONCURRENCY"
_ACCEPT_TIMEOUT_S = 10.0
_ROUTES_VERSION = f"http.{xds.STAT_PREFIX}.rds.{xds.ROUTE_CONFIG_NAME}.version_text"
_ROUTES_REJECTED = f"http.{xds.STAT_PREFIX}.rds.{xds.ROUTE_CONFIG_NAME}.update_rejected"
_CLUSTERS_REJECTED = "cluster_manager.cds.update_rejected"
_REJECTED_MARK = "config update rejected:"
_PORT_FREE_WAIT_S = 2.0


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


def _fsync_rename(data: Mapping[str, Any], tmp: Path, dest: Path) -> None:
    # Envoy watches ``dest`` for a rename (it ignores a file rewritten in place). No fsync:
    # the stored objects are the source of truth, and a shift must take milliseconds.
    replace_file(tmp, dest, orjson.dumps(data))


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
        """Where Envoy writes its admin address (TCP fallback only)."""
        return self.root / "admin-address"

    @property
    def admin_socket(self) -> Path:
        return admin_socket_path(self.root)


class Router(EnvoyAdmin):
    """The Envoy of one endpoint, whose files live in ``root``.

    Example:
        >>> router = Router(Path("/tmp/mlshift/endpoints/churn/envoy"), port=8000)  # doctest: +SKIP
        >>> router.ensure_running()  # doctest: +SKIP
        >>> router.write_routes(route_config)  # doctest: +SKIP
    """

    def __init__(self, root: Path, *, port: int, binary: str | os.PathLike[str] | None = None):
        # Absolute: the bootstrap path on Envoy's command line is what proves it is ours.
        self.paths = _Paths(Path(os.path.abspath(root)))
        super().__init__(port=port, log_path=self.paths.log)
        self._binary = binary
        self.expected = Expected.envoy(self.paths.bootstrap)
        """The command line of this endpoint's Envoy (see ``_ownership.identify``)."""
        self.last_reload_s: float = 0.0
        """Seconds from the rename to Envoy reporting the new version, for the last write."""
        # The running Envoy as last proven (pid, start time), and the rejection counters as
        # last read from it: a write need not ask for them again before it renames.
        self._identity: tuple[int, float | None] | None = None
        self._counters: dict[str, tuple[tuple[int, float | None], int]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def record(self) -> ProcessRecord | None:
        """The record of the running Envoy, or None when none runs that is provably ours."""
        record = read_record(self.paths.record)
        if record is not None and self._identity == (record.pid, record.started) and alive(record):
            return record  # proven ours before, and that very process still runs
        record = record if owned(record, self.expected) else None
        self._identity = (record.pid, record.started) if record is not None else None
        return record

    def _recorded_admin(self) -> str:
        record = self.record()
        return str((record.extra or {}).get("admin") or "") if record else ""

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
        deadline = time.monotonic() + _PORT_FREE_WAIT_S
        while procs.port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)  # an Envoy killed a moment ago may still be closing its socket
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
        admin_socket = self.paths.admin_socket if UNIX_ADMIN else None
        if admin_socket is not None:
            os.chmod(self.paths.root, 0o700)  # only this user may reach the socket inside
            admin_socket.unlink(missing_ok=True)
        config = bootstrap(
            router_port=self.port,
            cds_path=str(self.paths.cds),
            rds_path=str(self.paths.rds),
            admin_socket=str(admin_socket) if admin_socket is not None else None,
        )
        self.paths.bootstrap.write_text(json.dumps(config, indent=1))
        self.paths.admin_file.unlink(missing_ok=True)
        cmd = [str(binary), "-c", str(self.paths.bootstrap)]
        if admin_socket is None:
            cmd += ["--admin-address-path", str(self.paths.admin_file)]
        cmd += ["--disable-hot-restart", "--concurrency", str(_concurrency())]
        cmd += ["--log-level", "warning"]
        record = procs.spawn(
            cmd, log_path=self.paths.log, record_path=self.paths.record, port=self.port
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if not alive(record):
                raise LocalModeError(
                    f"Envoy exited right after starting ({exit_reason(record)}); last lines "
                    f"of {self.paths.log}:\n{procs.log_tail(self.paths.log)}"
                )
            if admin_socket is not None:
                admin = f"unix:{admin_socket}" if admin_socket.exists() else ""
            else:
                admin = self._read_admin_address()
            if admin and self._ready(admin):
                break
            if time.monotonic() > deadline:
                procs.stop(record, self.expected)
                raise LocalModeError(
                    f"Envoy did not get ready within {timeout_s:.0f} s; see {self.paths.log}:\n"
                    f"{procs.log_tail(self.paths.log)}"
                )
            time.sleep(0.02)
        record = ProcessRecord(
            record.pid, record.port, record.started, record.log, {"admin": admin}
        )
        record.save(self.paths.record)
        self._admin_address = ""
        log.info("router for %s listens on 127.0.0.1:%d", self.paths.root.parent.name, self.port)

    def ensure_serving(self) -> bool:
        """Make sure Envoy runs *and* listens; returns whether it was (re)started.

        An Envoy whose listener is gone (an admin ``/drain_listeners``) runs on but answers
        nothing: it is stopped and started again from its files.
        """
        if self.running() and not self.listening():
            log.warning(
                "the router of %s runs but no longer listens on port %d; restarting it",
                self.paths.root.parent.name,
                self.port,
            )
            self.stop()
        if self.running():
            return False
        self.ensure_running()
        return True

    def _read_admin_address(self) -> str:
        try:
            return self.paths.admin_file.read_text().strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop Envoy (if it runs and is provably this endpoint's) and forget its record."""
        self._admin_address = ""
        procs.stop(read_record(self.paths.record), self.expected, grace_s=5.0)
        self.paths.record.unlink(missing_ok=True)
        if UNIX_ADMIN and not self.running():
            with contextlib.suppress(OSError, LocalModeError):
                self.paths.admin_socket.unlink(missing_ok=True)

    # -- reads --------------------------------------------------------------------------------

    def stats(self, pattern: str) -> dict[str, Any]:
        """Return the stats whose names match the regex ``pattern`` as {name: value}.

        Rejection counters among them are remembered for the next write (``_write``).
        """
        identity = self._identity
        out = super().stats(pattern)
        if identity is not None:
            for name in (_ROUTES_REJECTED, _CLUSTERS_REJECTED):
                if name in out:
                    self._counters[name] = (identity, int(out[name] or 0))
        return out

    def cluster_health(self, clusters: Sequence[str]) -> dict[str, bool]:
        """Return {cluster: healthy?} for ``clusters`` Envoy has, in one small admin read.

        Healthy means Envoy's active health check passes and Envoy routes to the cluster's
        host (``membership_healthy``); a cluster Envoy does not have is left out. The read
        also refreshes the routes' rejection counter, so a shift that asked this first does
        not ask again before it writes the routes.

        Example:
            >>> router.cluster_health(["churn_v2"])  # doctest: +SKIP
            {'churn_v2': True}
        """
        names = "|".join(re.escape(c) for c in clusters)
        pattern = rf"^(cluster\.({names})\.membership_healthy|{re.escape(_ROUTES_REJECTED)})$"
        out: dict[str, bool] = {}
        for name, value in self.stats(pattern).items():
            if name.startswith("cluster.") and name.endswith(".membership_healthy"):
                out[name.removeprefix("cluster.").removesuffix(".membership_healthy")] = (
                    int(value or 0) > 0
                )
        return out

    def _counter_seen(self, stat: str, record: ProcessRecord | None) -> int | None:
        """``stat`` as last read from the Envoy of ``record`` (None: not read from it)."""
        seen = self._counters.get(stat)
        if record is None or seen is None or seen[0] != (record.pid, record.started):
            return None
        return seen[1]

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
            rejected_stat=_CLUSTERS_REJECTED,
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
            version_stat=_ROUTES_VERSION,
            rejected_stat=_ROUTES_REJECTED,
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
        record = self.record()
        # Envoy's rejection counter before the write: as last seen on this same Envoy (any
        # stats read passing by refreshes it, e.g. a shift's health read), else read now.
        # A remembered count may be behind another process's rejected write since: then a
        # rise is only taken for this write's if Envoy's log says so (writers take turns
        # under the endpoint's lock, and each waits for its rejection to be logged).
        seen = self._counter_seen(rejected_stat, record)
        certain = seen is None
        if record is not None and seen is None:
            seen = int(self.stats(pattern).get(rejected_stat) or 0)
        version = str(time.time_ns())
        previous = dest.read_bytes() if dest.exists() else None
        log_offset = self.paths.log.stat().st_size if self.paths.log.exists() else 0
        tmp = dest.parent.parent / f".{dest.name}.tmp"
        started = time.perf_counter()
        _fsync_rename(xds.discovery_response(resources, version), tmp, dest)
        if record is None or seen is None:
            return  # Envoy reads the file when it starts
        deadline = time.monotonic() + _ACCEPT_TIMEOUT_S
        while True:
            now = self.stats(pattern)
            if str(now.get(version_stat, "")).strip('"') == version:
                self.last_reload_s = time.perf_counter() - started
                log.debug("Envoy took new %s in %.1f ms", what, self.last_reload_s * 1000)
                return
            rejected = int(now.get(rejected_stat) or 0)
            if rejected > seen:
                reason = self._rejection_reason(log_offset)
                if reason is not None or certain:
                    self._restore(dest, previous, tmp)
                    raise RoutingError(
                        f"Envoy rejected the new {what} and keeps the old ones: "
                        f"{reason or f'no reason found in {self.paths.log}'}. "
                        "Routing is unchanged; fix the route (or the weights) and try again"
                    )
                seen = rejected  # another writer's rejection, before this write
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

    def _rejection_reason(self, offset: int) -> str | None:
        """Envoy's reason for rejecting a config, as logged after ``offset`` (None: none)."""
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
        return None

    def write_empty(self) -> None:
        """Drop every route and cluster (the endpoint is being deleted)."""
        with contextlib.suppress(RoutingError):
            self.write_routes(xds.empty_route_configuration())
        with contextlib.suppress(RoutingError):
            self._write(
                self.paths.cds,
                [],
                version_stat="cluster_manager.cds.version_text",
                rejected_stat=_CLUSTERS_REJECTED,
                what="clusters",
            )
