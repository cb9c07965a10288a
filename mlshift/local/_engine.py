"""The local engine: runs an endpoint's plans as model_server processes behind its own Envoy.

``LocalEngine`` is the ``Engine`` protocol for one endpoint on this machine; how each plan
step maps onto the processes and Envoy is in ``mlshift.local._steps`` (``PlanSteps``, its
base class). Everything lives under ``<home>/endpoints/<name>/`` (see
``mlshift.local._files``). A new Python process reattaches by reading it; a file lock keeps
two processes from executing plans at the same time. A process is only treated as the
endpoint's (stopped, counted as running) once proven so (``mlshift.local._ownership.identify``);
``delete`` needs no readable state: it stops every process the run records prove are the
endpoint's, then removes the directory. ``status`` reports a router that runs but serves
nothing (listener gone, no routes), and ``revive`` restarts it and writes its clusters and
routes again from the stored objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlshift._engine import Capability, VersionStatus
from mlshift._exceptions import MlshiftError, NotReadyError, RoutingError, UnknownVersionError
from mlshift._state import EndpointState, TrafficState, VersionSpec
from mlshift.local import _processes as procs
from mlshift.local import _xds as xds
from mlshift.local._envoy import Router
from mlshift.local._files import EndpointFiles
from mlshift.local._httproute import read_http_route
from mlshift.local._ownership import ProcessRecord, alive, identify, owned
from mlshift.local._sampling import MeshSampling
from mlshift.local._steps import PlanSteps

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._histogram import LatencyHistogram
    from mlshift._plan import Plan
    from mlshift._prediction_stats import PredictionStats

__all__ = ["LocalEngine"]

log = logging.getLogger("mlshift.local")


class LocalEngine(PlanSteps):
    """The ``Engine`` of one endpoint on this machine.

    Args:
        name: the endpoint.
        home: the state directory (``~/.mlshift`` by default, see ``mlshift.Local``).
        port: the router port to use when Envoy is (re)started; by default a free port is
            picked once and kept in the state directory.
        envoy: path of the Envoy binary (default: see ``find_envoy``).
        ready_timeout_s: how long a new version may take to get ready.

    Example:
        >>> engine = LocalEngine("churn", Path("~/.mlshift").expanduser())  # doctest: +SKIP
        >>> engine.execute(plan_change(None, state))  # doctest: +SKIP
        >>> engine.url(state)  # doctest: +SKIP
        'http://127.0.0.1:38121'
    """

    target = "local"
    capabilities: frozenset[Capability] = frozenset({"revive", "fast-load"})

    def __init__(
        self,
        name: str,
        home: Path,
        *,
        port: int | None = None,
        envoy: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = 60.0,
        workers: int = 1,
    ) -> None:
        self.name = name
        self.workers = workers
        self.files = EndpointFiles(home / "endpoints" / name)
        self.root = self.files.root  # absolute
        self.ready_timeout_s = ready_timeout_s
        self._port = port
        self._envoy = envoy
        self._router: Router | None = None
        self._routers: list[Router] = []  # every Router made, closed with the engine
        self._http = httpx.Client(timeout=1.0, trust_env=False)
        self._proven: dict[str, tuple[int, float | None]] = {}
        """version -> (pid, start time) of the process last proven to be its model server."""
        # The sampler thread reaches the engine through a weak reference only, so an engine
        # no Endpoint uses any more is collected, and the finalizer stops the thread.
        this = weakref.ref(self)
        self.sampling = MeshSampling(name, self.files, lambda: _router_of(this), self._http)
        self.prediction_samples = self.sampling.prediction_samples
        self._finalizer = weakref.finalize(self, _release, self.sampling, self._http, self._routers)
        self._finalizer.atexit = False  # at exit the daemon thread simply ends
        if self.files.running_envoy() is not None:
            self.sampling.start()  # reattached to a running mesh

    def __repr__(self) -> str:
        return f"<LocalEngine {self.name} at {self.root}>"

    @property
    def router(self) -> Router:
        """The endpoint's Envoy (its router port picked and kept on first use)."""
        if self._router is None:
            self._router = Router(
                self.files.envoy_dir, port=self.files.router_port(self._port), binary=self._envoy
            )
            self._routers.append(self._router)
        return self._router

    @property
    def closed(self) -> bool:
        """Whether ``close`` ran (the target then makes a new engine when asked)."""
        return not self._finalizer.alive

    # -- Engine protocol ----------------------------------------------------------------------

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Return the applied state and traffic history of ``name``, or None if it has none."""
        files = self.files if name == self.name else EndpointFiles(self.root.parent / name)
        return files.load_state()

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the endpoint's lock (re-entrant) from a verb's read to its write."""
        return self.files.lock()

    def execute(self, plan: Plan) -> None:
        """Run ``plan``'s steps in order; store its state and history once they all ran.

        Raises:
            NotReadyError: a version did not get ready (it is stopped; routing untouched).
            RoutingError: Envoy rejected the clusters or routes (it keeps the old ones).
            LocalModeError: Envoy cannot run here, or the router port is taken.
        """
        with self.files.lock():
            # Under the lock, before any step: a plan computed from routes another process
            # has changed since must not overwrite that change (the caller re-reads).
            for step in plan.steps:
                if step.action == "patch-routes" and step.obj is not None:
                    self._check_previous_routes(step.obj.get("previous"), step.kind)
            deleting = any(
                s.action == "delete" and s.kind == "Service" and not s.version for s in plan.steps
            )
            started: list[str] = []
            replaced: dict[str, ProcessRecord] = {}
            try:
                for step in plan.steps:
                    log.debug("%s: %s", self.name, step.describe())
                    self._run_step(step, plan, started, replaced)
            except BaseException:
                self._undo_starts(started, replaced)
                raise
            if deleting:
                self._remove_everything()
                return
            if not plan.steps or plan.steps[-1].action != "patch-routes":
                self.files.save_state(plan.state, plan.history)  # else saved with the routes
            # A read of Envoy's stats when versions come or go, on the sampler thread so the
            # verb does not wait: a new version's zero counts become its baseline at once. A
            # traffic change alone needs none (counters are cumulative), and a read right then
            # would take the CPU from the first requests under the new routes.
            if any(step.action != "patch-routes" for step in plan.steps):
                self.sampling.poke()

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        """Return each version's status: its process, its readiness, Envoy's health check.

        The full status (``versions`` None) also checks that the router listens and has its
        routes, and asks each server whether it is ready. A verb asking about the versions
        gaining weight needs less, and quickly (it runs inside every shift): each version's
        process is proven alive and its own (start time and command line), and Envoy's active
        health check of it (which asks the server every half second and decides whether
        Envoy sends it requests) must pass: as the sampler thread read it within the last
        1.5 s, else read in one small admin call. Only a version failing that is looked at in
        full, to say why.
        """
        wanted = [s for s in state.versions if versions is None or s.name in versions]
        out: dict[str, VersionStatus] = {}
        if versions is not None and wanted:
            out = self._quick_status(state, wanted)
            wanted = [s for s in wanted if s.name not in out]
        router = self._router_problem(thorough=versions is None) if wanted else ""
        health: dict[str, bool] = {}
        if not router and wanted:
            with contextlib.suppress(MlshiftError):
                health = self.router.host_health()
        for spec in wanted:
            version = spec.name
            record = self.files.record(version)
            reason = self._why_not_ready(version, record, router, health)
            out[version] = self._version_status(state, version, record, reason)
        return {s.name: out[s.name] for s in state.versions if s.name in out}

    def _quick_status(
        self, state: EndpointState, wanted: list[VersionSpec]
    ) -> dict[str, VersionStatus]:
        """The versions of ``wanted`` proven ready cheaply (see ``status``); others left out.

        Envoy's health checks as the sampler thread read them within the last
        ``HEALTH_MAX_AGE_S``; those it did not see healthy are asked for in one admin read.
        Whether Envoy itself still runs is not asked: a shift starts a stopped router.
        """
        healthy = {v for v, ok in self.sampling.health().items() if ok}
        clusters = {
            xds.cluster_name(self.name, s.name): s.name for s in wanted if s.name not in healthy
        }
        if clusters:
            try:
                health = self.router.cluster_health(list(clusters))
            except RoutingError:
                health = {}
            healthy |= {v for c, v in clusters.items() if health.get(c)}
        out: dict[str, VersionStatus] = {}
        for version in (s.name for s in wanted if s.name in healthy):
            record = self.files.record(version)
            if self._ours(version, record):
                out[version] = self._version_status(state, version, record, "")
        return out

    def _ours(self, version: str, record: ProcessRecord | None) -> bool:
        """Whether ``record``'s process is ``version``'s server: proven once (command line,
        start time), then only checked to be that same process, still running."""
        if record is None:
            return False
        key = (record.pid, record.started)
        if self._proven.get(version) == key and alive(record):
            return True
        if identify(record, self.files.server(version)).process is None:
            return False
        self._proven[version] = key
        return True

    @staticmethod
    def _version_status(
        state: EndpointState, version: str, record: ProcessRecord | None, reason: str
    ) -> VersionStatus:
        return VersionStatus(
            version=version,
            ready=not reason,
            weight=int(state.traffic.weights.get(version, 0)),
            reason=reason,
            replicas=1,
            ready_replicas=0 if reason else 1,
            address=f"http://127.0.0.1:{record.port}" if record else "",
        )

    def _router_problem(self, *, thorough: bool = True) -> str:
        """Why the router cannot take the endpoint's requests ('' when it can)."""
        router = self.router
        if not router.running():
            return (
                "the router (Envoy) is not running; ep.revive() (or any change such as "
                "ep.shift) starts it"
            )
        if not thorough:
            return ""
        if not router.listening():
            return (
                f"the router (Envoy) runs but no longer listens on port {router.port} (its "
                "listener was drained or stopped); ep.revive() restarts it"
            )
        try:
            routes = router.route_count()
        except RoutingError as exc:
            return f"the router (Envoy) does not answer: {exc}"
        if not routes:
            return (
                "the router has no routes (its route file was lost or emptied), so every "
                "request gets 404; ep.revive() writes them again"
            )
        return ""

    def _why_not_ready(
        self,
        version: str,
        record: ProcessRecord | None,
        router_problem: str,
        health: dict[str, bool],
    ) -> str:
        if record is None:
            return "no process (deploy the version again)"
        found = identify(record, self.files.server(version))
        if found.process is None:
            if not found.exited:
                return f"{found.reason}; ep.revive() starts the version again"
            return f"{found.reason}{_last_lines(record)}; ep.revive() starts it again"
        url = f"http://127.0.0.1:{record.port}/v2/models/{self.name}/ready"
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            return f"server does not answer on port {record.port}: {exc}"
        other = procs.answers_as(response, version)
        if other:
            return f"another server answers on its port {record.port} ({other})"
        if response.status_code != 200:
            return (
                f"server answers {response.status_code} on /v2/models/{self.name}/ready "
                "(starting or draining)"
            )
        if router_problem:
            return router_problem
        cluster = xds.cluster_name(self.name, version)
        if health.get(cluster) is False:
            return "Envoy's health check of the version fails"
        return ""

    def url(self, state: EndpointState) -> str:
        """Return the router's address, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.router.port}"

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        """Return the per-version frame over the last ``since`` s (see ``MeshSampling``)."""
        return self.sampling.metrics(state, since=since, step=step)

    def checkpoint(self, state: EndpointState) -> float:
        """Read Envoy's counters now and return the time from which a window counts only
        later traffic (see ``MeshSampling.checkpoint``).

        Example:
            >>> start = engine.checkpoint(state)  # doctest: +SKIP
        """
        return self.sampling.checkpoint()

    def latency_histograms(
        self, state: EndpointState, *, since: float
    ) -> dict[str, LatencyHistogram]:
        """Return each version's latency histogram over the last ``since`` s, from Envoy's
        ``upstream_rq_time`` buckets (see ``MeshSampling``).

        Example:
            >>> engine.latency_histograms(state, since=60.0)["v1"].quantile(0.99)  # doctest: +SKIP
            12.5
        """
        return self.sampling.latency_histograms(state, since=since)

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        """Return each version's predictions over the last ``since`` seconds.

        Example:
            >>> engine.predictions(state, since=120.0)  # doctest: +SKIP
            [PredictionStats(version='v1', classes={'no': 81.0, 'yes': 19.0}, ...)]
        """
        return self.sampling.predictions(state, since=since)

    def journal(self, state: EndpointState, version: str, *, since: float) -> list[dict[str, Any]]:
        """The version's request journal, read straight from its process.

        Example:
            >>> engine.journal(state, "v2", since=time.time() - 600)  # doctest: +SKIP
            [{'id': '5f0c...', 'time': 1767000000.1, 'status': 200, ...}]
        """
        record = self.files.record(version)
        if record is None:
            raise UnknownVersionError(f"{self.name}/{version} has no process; deploy it first")
        url = f"http://127.0.0.1:{record.port}/v2/models/{self.name}/journal"
        try:
            response = self._http.get(url, params={"since": repr(since)}, timeout=10.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MlshiftError(
                f"cannot read {self.name}/{version}'s journal on port {record.port}: {exc};"
                " check ep.status() (ep.revive() restarts a version that died)"
            ) from exc
        entries = response.json().get("entries") or []
        return [e for e in entries if isinstance(e, dict)]

    # -- extras -------------------------------------------------------------------------------

    def sample(self) -> None:
        """Read Envoy's per-version stats once and store them (the thread does every second)."""
        self.sampling.sample()

    def sample_predictions(self) -> None:
        """Read every running version's prediction counters once and store them."""
        self.sampling.sample_predictions()

    def revive(self, state: EndpointState) -> list[str]:
        """Restart what is not running (Envoy, versions whose process is gone), e.g. after a
        reboot; routing resumes from the stored config. Returns the versions restarted.

        Example:
            >>> engine.revive(state)  # doctest: +SKIP
            ['v1', 'v2']
        """
        with self.files.lock():
            # The router first: it takes its own port back before new version processes pick
            # free ports (one of them could otherwise get the port Envoy used to hold). One
            # that runs without its listener is restarted.
            self.router.ensure_serving()
            restarted: list[str] = []
            for spec in state.versions:
                record = self.files.record(spec.name)
                if owned(record, self.files.server(spec.name)) or not spec.bundle:
                    continue
                self._start_version(spec.name, spec.bundle, spec.model_sha256, spec.trust_pickle)
                restarted.append(spec.name)
            failed: list[NotReadyError] = []
            for version in restarted:
                try:
                    self._wait_ready(version, {})
                except NotReadyError as exc:
                    failed.append(exc)  # the others still get their routes back
            self.sampling.start()
            # Clusters and routes from the stored objects, whatever the files say now (a lost
            # route file would leave Envoy with no routes: every request a 404).
            rule = self._cluster_rule()
            if rule is not None:
                self._write_clusters(rule)
            service = self.files.stored("VirtualService")
            route = self.files.stored("HTTPRoute")
            if service is not None:
                self.router.write_routes(xds.route_configuration(service))
            elif route is not None:
                self.router.write_routes(xds.envoy_routes(read_http_route(route, self.name)))
            if failed:
                raise failed[0]
            return restarted

    def pids(self) -> dict[str, int]:
        """Return the pid of every live process of this endpoint (``envoy`` and versions)."""
        out: dict[str, int] = {}
        record = self.router.record()
        if record is not None:
            out["envoy"] = record.pid
        for version, rec in self.files.records().items():
            if owned(rec, self.files.server(version)):
                out[version] = rec.pid
        return out

    def close(self) -> None:
        """Stop sampling in this process and close its clients (the mesh keeps running).

        Also done when no ``Endpoint`` uses the engine any more (it is garbage collected).
        """
        self._finalizer()

    # -- delete -------------------------------------------------------------------------------

    def _remove_everything(self) -> None:
        """After a delete: stop every process left that is provably this endpoint's (even
        one no state knows: the state may be unreadable) and drop the directory."""
        self.sampling.stop()
        self.router.stop()
        for version, record in self.files.records().items():
            procs.stop(record, self.files.server(version))
        shutil.rmtree(self.root, ignore_errors=True)
        if self._router is not None:
            self._router.close()
        self._router = None


def _router_of(engine: weakref.ref[LocalEngine]) -> Router:
    """The router of a live engine (for its sampler thread, which must not keep it alive)."""
    alive = engine()
    if alive is None:
        raise MlshiftError("this endpoint's engine was closed; sampling stops")
    return alive.router


def _release(sampling: MeshSampling, http: httpx.Client, routers: list[Router]) -> None:
    """Stop an engine's sampler thread and close its clients (``close``, or collection)."""

    def release() -> None:
        sampling.stop()
        http.close()
        for router in routers:
            router.close()

    if sampling.on_sampler_thread():
        # Collected on its own sampler thread, which cannot wait for itself to end.
        threading.Thread(target=release, name="mlshift-release", daemon=True).start()
    else:
        release()


def _last_lines(record: ProcessRecord, lines: int = 3) -> str:
    """``; last lines of <log>: a | b | c`` (what a crashed process said last), or ''."""
    tail = [line.strip() for line in procs.log_tail(record.log, lines).splitlines()]
    tail = [line for line in tail if line]
    return f"; last lines of {record.log}: {' | '.join(tail)}" if tail else ""
