"""How each plan step runs on the local mesh, and how a failed plan's starts are undone.

Plan steps map onto the local mesh like this:

    apply Deployment       start the version's model_server (a changed model: a new process
                           beside the old one, swapped in once ready)
    wait-ready             wait for /v2/health/ready, or stop it and raise NotReadyError
    apply Service          make sure the endpoint's Envoy runs; a version's Service
                           (Gateway API routing): add its cluster, as a subset would
    apply DestinationRule  translate to clusters, write them, wait until Envoy runs them
    patch-routes           merge mlshift's routes into the stored VirtualService (foreign
                           routes kept), translate, write, wait until Envoy accepted them;
                           if the stored managed routes are not the step's "previous" ones,
                           ConflictError before any step of the plan runs
    patch-routes HTTPRoute the same with the HTTPRoute's managed rules (``_httproute``)
    delete ...             stop the process / drop the routes or clusters / stop Envoy

When a step fails, the versions the plan started are stopped and the records of the processes
they were to replace are put back (``_undo_starts``). ``PlanSteps`` is the base class of
``LocalEngine`` (``_engine``), which holds the endpoint's lock around a plan and stores its
state once every step ran.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift._exceptions import (
    ConflictError,
    DeployError,
    MlshiftError,
    NotReadyError,
    RoutingError,
)
from mlshift._render import is_managed_route, merge_routes, render_virtual_service
from mlshift._render_gateway import backends_of, merge_rules, render_http_route
from mlshift.local import _processes as procs
from mlshift.local import _xds as xds
from mlshift.local._files import EndpointFiles, write_json
from mlshift.local._httproute import read_http_route
from mlshift.local._ownership import ProcessRecord, owned

if TYPE_CHECKING:
    from mlshift._plan import Plan, Step
    from mlshift._state import EndpointState
    from mlshift.local._envoy import Router
    from mlshift.local._sampling import MeshSampling

__all__ = ["PlanSteps"]

log = logging.getLogger("mlshift.local")
# A version's cluster-only companions (mlshift._workload): one local process has no use for them.
CLUSTER_ONLY = frozenset({"PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor"})


class PlanSteps(abc.ABC):
    """Runs plan steps on one endpoint's processes and Envoy; the base class of ``LocalEngine``.

    ``LocalEngine.execute`` checks a plan's routes (``_check_previous_routes``), runs each step
    (``_run_step``) and undoes the starts of a plan that failed (``_undo_starts``);
    ``LocalEngine.revive`` starts versions and rewrites clusters with the same methods.
    """

    # Set by LocalEngine.__init__.
    name: str
    root: Path
    files: EndpointFiles
    sampling: MeshSampling
    ready_timeout_s: float
    workers: int

    @property
    @abc.abstractmethod
    def router(self) -> Router:
        """The endpoint's Envoy (``LocalEngine`` makes it on first use)."""

    def _run_step(
        self,
        step: Step,
        plan: Plan,
        started: list[str],
        replaced: dict[str, ProcessRecord],
    ) -> None:
        if step.action == "apply" and step.kind == "Deployment":
            self._apply_deployment(step, plan.state, started, replaced)
        elif step.action == "wait-ready":
            self._wait_ready(str(step.version), replaced)
        elif step.action == "apply" and step.kind == "Service" and step.version:
            assert step.obj is not None
            write_json(self.files.object_path("Service", str(step.version)), step.obj)
            self._add_version_service(str(step.version))
        elif step.action == "apply" and step.kind == "Service":
            self.router.ensure_running()
            write_json(self.files.object_path("Service"), step.obj)
            self.sampling.start()
        elif step.action == "apply" and step.kind == "DestinationRule":
            assert step.obj is not None
            self._write_clusters(step.obj)
            write_json(self.files.object_path("DestinationRule"), step.obj)
        elif step.action == "patch-routes" and step.kind == "HTTPRoute":
            assert step.obj is not None
            self._patch_rules(step.obj, plan)
        elif step.action == "patch-routes":
            assert step.obj is not None
            self._patch_routes(step.obj, plan)
        elif step.action == "delete":
            self._delete(step)
        elif step.action == "apply" and step.kind in CLUSTER_ONLY:
            log.debug("%s: nothing to do locally", step.describe())
        else:
            raise MlshiftError(
                f"the local engine cannot run step {step.describe()!r}; this is a bug in mlshift"
            )

    def _apply_deployment(
        self,
        step: Step,
        state: EndpointState,
        started: list[str],
        replaced: dict[str, ProcessRecord],
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
        if current is not None and owned(current, self.files.server(version)):
            if (current.extra or {}).get("sha256") == spec.model_sha256:
                log.debug("%s/%s already runs this model (pid %d)", self.name, version, current.pid)
                write_json(self.files.object_path("Deployment", version), step.obj)
                return
            replaced[version] = current  # swapped out once the new process is ready
        self._start_version(version, spec.bundle, spec.model_sha256, spec.trust_pickle)
        started.append(version)
        write_json(self.files.object_path("Deployment", version), step.obj)

    def _start_version(
        self, version: str, bundle: str, sha256: str, trust_pickle: bool = False
    ) -> None:
        """Start a model server for ``bundle`` and record it, with the model's digest.

        ``trust_pickle`` (the version's deployer said so) lets it load a pickle bundle.
        """
        record = procs.start_model_server(
            bundle,
            name=self.name,
            version=version,
            run_dir=self.files.run_dir,
            avoid_ports=(self.router.port,),
            trust_pickle=trust_pickle,
            workers=self.workers,
        )
        extra = {**(record.extra or {}), "sha256": sha256}
        dataclasses.replace(record, extra=extra).save(self.files.record_path(version))

    def _wait_ready(self, version: str, replaced: dict[str, ProcessRecord]) -> None:
        record = self.files.record(version)
        if record is None:
            raise NotReadyError(
                f"version {version!r} of {self.name!r} has no process to wait for; deploy it again",
                reason="no process",
            )
        procs.wait_ready(
            record,
            what=f"version {version!r} of {self.name!r}",
            name=self.name,
            version=version,
            timeout_s=self.ready_timeout_s,
        )
        old = replaced.pop(version, None)
        if old is not None:
            rule = self._cluster_rule()
            if rule is not None and self.router.running():
                self._write_clusters(rule)  # now pointing at the new process
            procs.stop(old, self.files.server(version))

    def _undo_starts(self, started: list[str], replaced: dict[str, ProcessRecord]) -> None:
        """After a failed plan: stop what it started, give back what it replaced."""
        for version in started:
            procs.stop(self.files.record(version), self.files.server(version), grace_s=2.0)
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

    def _cluster_rule(self) -> dict[str, Any] | None:
        """What Envoy's clusters are made of: the stored DestinationRule, or (Gateway API
        routing) the version Services, as a rule with one subset per version."""
        rule = self.files.stored("DestinationRule")
        if rule is not None:
            return rule
        versions = self.files.stored("VersionServices")
        if versions is None:
            return None
        subsets = [{"name": v} for v in versions.get("versions") or ()]
        return {"metadata": {"name": self.name}, "spec": {"host": self.name, "subsets": subsets}}

    def _add_version_service(self, version: str, *, remove: bool = False) -> None:
        stored = self.files.stored("VersionServices") or {"versions": []}
        versions = [v for v in stored.get("versions") or () if v != version]
        if not remove:
            versions.append(version)
        write_json(self.files.object_path("VersionServices"), {"versions": versions})
        rule = self._cluster_rule()
        if rule is not None and (not remove or self.router.running()):
            self._write_clusters(rule)

    def _check_previous_routes(
        self, previous: list[dict[str, Any]] | None, kind: str = "VirtualService"
    ) -> None:
        """Raise ConflictError when the stored managed routes (or HTTPRoute rules) are not
        ``previous``."""
        if previous is None:
            return
        stored = self.files.stored(kind)
        field = "rules" if kind == "HTTPRoute" else "http"
        live = [
            r for r in ((stored or {}).get("spec") or {}).get(field) or () if is_managed_route(r)
        ]
        # Compared as JSON, the way they are stored (tuples become lists and so on).
        if json.loads(json.dumps(previous)) != live:
            raise ConflictError(
                f"the traffic routes of {self.name!r} changed since they were read (another "
                "process or notebook changed them); re-read the endpoint and try again. "
                "Nothing was changed"
            )

    def _patch_routes(self, patch: dict[str, Any], plan: Plan) -> None:
        stored = self.files.stored("VirtualService")  # just read: a copy of its own
        vs = stored if stored else render_virtual_service(plan.state)
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

    def _patch_rules(self, patch: dict[str, Any], plan: Plan) -> None:
        stored = self.files.stored("HTTPRoute")
        route = stored or render_http_route(plan.state)  # just read: a copy of its own
        route.setdefault("spec", {})
        route["spec"]["rules"] = merge_rules(
            stored["spec"].get("rules") if stored else None, patch["rules"]
        )
        config = xds.envoy_routes(read_http_route(route, self.name))
        rule = self._cluster_rule() or {}
        have = {s["name"] for s in (rule.get("spec") or {}).get("subsets") or ()}
        named = backends_of(route, self.name)
        if named - have:
            raise RoutingError(
                f"the HTTPRoute of {self.name!r} sends traffic to "
                f"{', '.join(sorted(map(repr, named - have)))}, which has no version Service "
                f"(there are {', '.join(sorted(map(repr, have))) or 'none'}); deploy the version"
                " first. Routing is unchanged"
            )
        self.router.ensure_running()
        self.sampling.start()
        self.router.write_routes(config)
        write_json(self.files.object_path("HTTPRoute"), route)
        self.files.save_state(plan.state, plan.history)

    def _delete(self, step: Step) -> None:
        if step.kind == "Service" and step.version:
            self._add_version_service(str(step.version), remove=True)
            self.files.object_path("Service", str(step.version)).unlink(missing_ok=True)
        elif step.kind == "Deployment":
            version = str(step.version)
            procs.stop(self.files.record(version), self.files.server(version))
            self.files.record_path(version).unlink(missing_ok=True)
            self.files.object_path("Deployment", version).unlink(missing_ok=True)
            shutil.rmtree(self.root / "bundles" / version, ignore_errors=True)
        elif step.kind in ("VirtualService", "HTTPRoute"):
            if self.router.running():
                self.router.write_routes(xds.empty_route_configuration())
            self.files.object_path(step.kind).unlink(missing_ok=True)
        elif step.kind == "DestinationRule":
            if self.router.running():
                self.router.write_clusters([])
            self.files.object_path("DestinationRule").unlink(missing_ok=True)
        elif step.kind == "Service":
            self.sampling.stop()
            self.router.stop()
            self.files.object_path("Service").unlink(missing_ok=True)
