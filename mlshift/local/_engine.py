"""The local engine: runs an endpoint's plans as model_server processes behind its own Envoy.

Plan steps map onto the local mesh like this:

    apply Deployment       start the version's model_server (a changed model: a new process
                           beside the old one, swapped in once ready)
    wait-ready             wait for /v2/health/ready, or stop it and raise NotReadyError
    apply Service          make sure the endpoint's Envoy runs
    apply DestinationRule  translate to clusters, write them, wait until Envoy runs them
    patch-routes           merge mlshift's routes into the stored VirtualService (foreign
                           routes kept), translate, write, wait until Envoy accepted them;
                           if the stored managed routes are not the step's "previous" ones,
                           ConflictError before any step of the plan runs
    delete ...             stop the process / drop the routes or clusters / stop Envoy

Everything lives under ``<home>/endpoints/<name>/`` (see ``mlshift.local._files``). A new
Python process reattaches by reading it; a file lock keeps two processes from executing plans
at the same time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlshift._engine import Capability, VersionStatus
from mlshift._exceptions import (
    ConflictError,
    DeployError,
    MlshiftError,
    NotReadyError,
    RoutingError,
)
from mlshift._render import is_managed_route, merge_routes, render_virtual_service
from mlshift._state import EndpointState, TrafficState
from mlshift.local import _processes as procs
from mlshift.local import _xds as xds
from mlshift.local._envoy import Router
from mlshift.local._files import EndpointFiles, write_json
from mlshift.local._sampling import MeshSampling

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._plan import Plan, Step
    from mlshift._prediction_stats import PredictionStats

__all__ = ["LocalEngine"]

log = logging.getLogger("mlshift.local")


class LocalEngine:
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
    capabilities: frozenset[Capability] = frozenset({"revive"})

    def __init__(
        self,
        name: str,
        home: Path,
        *,
        port: int | None = None,
        envoy: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self.root = home / "endpoints" / name
        self.files = EndpointFiles(self.root)
        self.ready_timeout_s = ready_timeout_s
        self._port = port
        self._envoy = envoy
        self._router: Router | None = None
        self._http = httpx.Client(timeout=1.0, trust_env=False)
        self.sampling = MeshSampling(name, self.files, lambda: self.router, self._http)
        self.prediction_samples = self.sampling.prediction_samples
        if procs.alive(procs.read_record(self.root / "envoy" / "envoy.json")):
            self.sampling.start()  # reattached to a running mesh

    def __repr__(self) -> str:
        return f"<LocalEngine {self.name} at {self.root}>"

    @property
    def router(self) -> Router:
        """The endpoint's Envoy (its router port picked and kept on first use)."""
        if self._router is None:
            self._router = Router(
                self.root / "envoy", port=self.files.router_port(self._port), binary=self._envoy
            )
        return self._router

    # -- Engine protocol ----------------------------------------------------------------------

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Return the applied state and traffic history of ``name``, or None if it has none."""
        files = self.files if name == self.name else EndpointFiles(self.root.parent / name)
        return files.load_state()

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
                    self._check_previous_routes(step.obj.get("previous"))
            deleting = any(s.action == "delete" and s.kind == "Service" for s in plan.steps)
            started: list[str] = []
            replaced: dict[str, procs.ProcessRecord] = {}
            try:
                for step in plan.steps:
                    log.debug("%s: %s", self.name, step.describe())
                    self._run_step(step, plan, started, replaced)
            except BaseException:
                self._undo_starts(started, replaced)
                raise
            if deleting:
                self._remove_everything()
            else:
                self.files.save_state(plan.state, plan.history)
                # A sample at every change: a new version's zero counts become its baseline,
                # and a shift's boundary is exact (the sampler alone ticks once a second).
                with contextlib.suppress(MlshiftError):
                    self.sample()

    def status(self, state: EndpointState) -> dict[str, VersionStatus]:
        """Return each version's status: its process, its readiness, Envoy's health check."""
        running = self.router.running()
        health: dict[str, bool] = {}
        if running:
            with contextlib.suppress(MlshiftError):
                health = self.router.host_health()
        out: dict[str, VersionStatus] = {}
        for spec in state.versions:
            version = spec.name
            weight = int(state.traffic.weights.get(version, 0))
            record = self.files.record(version)
            address = f"http://127.0.0.1:{record.port}" if record else ""
            reason = self._why_not_ready(version, record, running, health)
            out[version] = VersionStatus(
                version=version,
                ready=not reason,
                weight=weight,
                reason=reason,
                replicas=1,
                ready_replicas=0 if reason else 1,
                address=address,
            )
        return out

    def _why_not_ready(
        self,
        version: str,
        record: procs.ProcessRecord | None,
        router_running: bool,
        health: dict[str, bool],
    ) -> str:
        if record is None:
            return "no process (deploy the version again)"
        if not procs.alive(record):
            return procs.exit_reason(record)
        try:
            code = self._http.get(f"http://127.0.0.1:{record.port}/v2/health/ready").status_code
        except httpx.HTTPError as exc:
            return f"server does not answer on port {record.port}: {exc}"
        if code != 200:
            return f"server answers {code} on /v2/health/ready (starting or draining)"
        if not router_running:
            return "the router (Envoy) is not running; any change such as ep.shift starts it"
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

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        """Return each version's predictions over the last ``since`` seconds.

        Example:
            >>> engine.predictions(state, since=120.0)  # doctest: +SKIP
            [PredictionStats(version='v1', classes={'no': 81.0, 'yes': 19.0}, ...)]
        """
        return self.sampling.predictions(state, since=since)

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
            # free ports (one of them could otherwise get the port Envoy used to hold).
            self.router.ensure_running()
            restarted: list[str] = []
            for spec in state.versions:
                if procs.alive(self.files.record(spec.name)) or not spec.bundle:
                    continue
                self._start_version(spec.name, spec.bundle, spec.model_sha256)
                restarted.append(spec.name)
            for version in restarted:
                self._wait_ready(version, {})
            self.sampling.start()
            rule = self.files.stored("DestinationRule")
            if rule is not None:
                self._write_clusters(rule)
            return restarted

    def pids(self) -> dict[str, int]:
        """Return the pid of every live process of this endpoint (``envoy`` and versions)."""
        out: dict[str, int] = {}
        record = self.router.record()
        if record is not None:
            out["envoy"] = record.pid
        for path in sorted(self.files.run_dir.glob("*.json")):
            rec = procs.read_record(path)
            if rec is not None and procs.alive(rec):
                out[path.stem] = rec.pid
        return out

    def close(self) -> None:
        """Stop sampling in this process and close its clients (the mesh keeps running)."""
        self.sampling.stop()
        self._http.close()
        if self._router is not None:
            self._router.close()

    # -- steps --------------------------------------------------------------------------------

    def _run_step(
        self,
        step: Step,
        plan: Plan,
        started: list[str],
        replaced: dict[str, procs.ProcessRecord],
    ) -> None:
        if step.action == "apply" and step.kind == "Deployment":
            self._apply_deployment(step, plan.state, started, replaced)
        elif step.action == "wait-ready":
            self._wait_ready(str(step.version), replaced)
        elif step.action == "apply" and step.kind == "Service":
            self.router.ensure_running()
            write_json(self.files.object_path("Service"), step.obj)
            self.sampling.start()
        elif step.action == "apply" and step.kind == "DestinationRule":
            assert step.obj is not None
            self._write_clusters(step.obj)
            write_json(self.files.object_path("DestinationRule"), step.obj)
        elif step.action == "patch-routes":
            assert step.obj is not None
            self._patch_routes(step.obj, plan)
        elif step.action == "delete":
            self._delete(step)
        else:
            raise MlshiftError(
                f"the local engine cannot run step {step.describe()!r}; this is a bug in mlshift"
            )

    def _apply_deployment(
        self,
        step: Step,
        state: EndpointState,
        started: list[str],
        replaced: dict[str, procs.ProcessRecord],
    ) -> None:
        version = str(step.version)
        spec = state.version(version)
        if spec is None or not spec.bundle:
            raise DeployError(
                f"version {version!r} of {self.name!r} has no bundle directory; deploy it "
                "through mlshift.Local().prepare_version (ep.deploy does)"
            )
        if not Path(spec.bundle).is_dir():
            raise DeployError(
                f"the bundle of {self.name}/{version} is missing at {spec.bundle}; deploy the "
                "version again"
            )
        current = self.files.record(version)
        if procs.alive(current) and current is not None:
            if (current.extra or {}).get("sha256") == spec.model_sha256:
                log.debug("%s/%s already runs this model (pid %d)", self.name, version, current.pid)
                write_json(self.files.object_path("Deployment", version), step.obj)
                return
            replaced[version] = current  # swapped out once the new process is ready
        self._start_version(version, spec.bundle, spec.model_sha256)
        started.append(version)
        write_json(self.files.object_path("Deployment", version), step.obj)

    def _start_version(self, version: str, bundle: str, sha256: str) -> None:
        """Start a model server for ``bundle`` and record it, with the model's digest."""
        record = procs.start_model_server(
            bundle,
            name=self.name,
            version=version,
            run_dir=self.files.run_dir,
            avoid_ports=(self.router.port,),
        )
        extra = {**(record.extra or {}), "sha256": sha256}
        dataclasses.replace(record, extra=extra).save(self.files.record_path(version))

    def _wait_ready(self, version: str, replaced: dict[str, procs.ProcessRecord]) -> None:
        record = self.files.record(version)
        if record is None:
            raise NotReadyError(
                f"version {version!r} of {self.name!r} has no process to wait for; deploy it again",
                reason="no process",
            )
        procs.wait_ready(
            record, what=f"version {version!r} of {self.name!r}", timeout_s=self.ready_timeout_s
        )
        old = replaced.pop(version, None)
        if old is not None:
            rule = self.files.stored("DestinationRule")
            if rule is not None and self.router.running():
                self._write_clusters(rule)  # now pointing at the new process
            procs.stop(old)

    def _undo_starts(self, started: list[str], replaced: dict[str, procs.ProcessRecord]) -> None:
        """After a failed plan: stop what it started, give back what it replaced."""
        for version in started:
            procs.stop(self.files.record(version), grace_s=2.0)
            old = replaced.get(version)
            if old is not None:
                old.save(self.files.record_path(version))
            else:
                self.files.record_path(version).unlink(missing_ok=True)

    def _write_clusters(self, rule: dict[str, Any]) -> None:
        clusters = xds.clusters(rule, self.files.ports())
        self.router.ensure_running()
        self.sampling.start()
        self.router.write_clusters(clusters)

    def _check_previous_routes(self, previous: list[dict[str, Any]] | None) -> None:
        """Raise ConflictError when the stored managed routes are not ``previous``."""
        if previous is None:
            return
        stored = self.files.stored("VirtualService")
        live = [
            r for r in ((stored or {}).get("spec") or {}).get("http") or () if is_managed_route(r)
        ]
        # Compared as JSON, the way they are stored (tuples become lists and so on).
        if json.loads(json.dumps(previous)) != live:
            raise ConflictError(
                f"the traffic routes of {self.name!r} changed since they were read (another "
                "process or notebook changed them); re-read the endpoint and try again. "
                "Nothing was changed"
            )

    def _patch_routes(self, patch: dict[str, Any], plan: Plan) -> None:
        stored = self.files.stored("VirtualService")
        vs = copy.deepcopy(stored) if stored else render_virtual_service(plan.state)
        vs.setdefault("spec", {})
        vs["spec"]["http"] = merge_routes(
            stored["spec"].get("http") if stored else None, patch["http"]
        )
        config = xds.route_configuration(vs)
        rule = self.files.stored("DestinationRule") or {}
        subsets = {s["name"] for s in (rule.get("spec") or {}).get("subsets") or ()}
        named = xds.subsets_of(vs)
        if named - subsets:
            # Envoy would take these routes and answer 503 for the missing clusters; Istio
            # users meet this as istio/istio#6335. Refuse before anything changes.
            raise RoutingError(
                f"the routes of {self.name!r} send traffic to "
                f"{', '.join(sorted(map(repr, named - subsets)))}, which the DestinationRule does "
                f"not define (it has {', '.join(sorted(map(repr, subsets))) or 'no subsets'}); "
                "deploy the version first. Routing is unchanged"
            )
        self.router.ensure_running()
        self.sampling.start()
        self.router.write_routes(config)
        write_json(self.files.object_path("VirtualService"), vs)
        self.files.save_state(plan.state, plan.history)

    def _delete(self, step: Step) -> None:
        if step.kind == "Deployment":
            version = str(step.version)
            procs.stop(self.files.record(version))
            self.files.record_path(version).unlink(missing_ok=True)
            self.files.object_path("Deployment", version).unlink(missing_ok=True)
            shutil.rmtree(self.root / "bundles" / version, ignore_errors=True)
        elif step.kind == "VirtualService":
            if self.router.running():
                self.router.write_routes(xds.empty_route_configuration())
            self.files.object_path("VirtualService").unlink(missing_ok=True)
        elif step.kind == "DestinationRule":
            if self.router.running():
                self.router.write_clusters([])
            self.files.object_path("DestinationRule").unlink(missing_ok=True)
        elif step.kind == "Service":
            self.sampling.stop()
            self.router.stop()
            self.files.object_path("Service").unlink(missing_ok=True)

    def _remove_everything(self) -> None:
        """After a delete: stop any process left (even one no state knows) and drop the dir."""
        self.sampling.stop()
        self.router.stop()
        for path in self.files.run_dir.glob("*.json"):
            procs.stop(procs.read_record(path))
        shutil.rmtree(self.root, ignore_errors=True)
        self._router = None
