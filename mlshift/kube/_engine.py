"""The Kubernetes engine: runs a plan's steps against a cluster and reads the endpoint back.

Writes follow the plan's order (``mlshift._plan``): a version's Deployment, then a wait for
its rollout, then the DestinationRule subset, then the VirtualService routes; removals run
the other way. Three rules keep other people's work and live traffic safe:

- Objects are created with ``POST`` and, when they exist, merge-patched; never ``PUT``.
  An existing Deployment or Service without mlshift's managed-by label is someone else's:
  refused before any write (``_writes``). DestinationRule subsets are read, modified
  (mlshift's only; others' kept) and written with the resourceVersion read, again on 409.
  Istio's objects use the networking version the cluster serves (``_discovery``); a
  cluster without Istio is a ``ConfigError`` before the first write.
- Routes are changed by reading the VirtualService, swapping only mlshift's routes
  (``merge_routes``) and writing a merge patch carrying the ``resourceVersion`` that was
  read, so a concurrent change makes the API server answer 409. A change computed from
  managed routes that are no longer the live ones (the step's ``previous``: someone else
  moved the traffic meanwhile) is refused before any write. Both raise ``ConflictError``
  at once: the facade is the one retry layer (it re-reads the endpoint, recomputes the
  change on top of what is live, and tries again until its deadline), so retries never
  multiply.
- A version that does not become ready raises ``NotReadyError`` with the reason from the
  pods and events of its current rollout (the newest ReplicaSet; a failed earlier rollout's
  pods and stale conditions do not count), before any route may send it traffic.

The traffic history (for ``rollback``) lives in the VirtualService's
``mlshift.io/traffic-history`` annotation, so a second notebook sees the same history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlshift._engine import Capability, VersionStatus
from mlshift._exceptions import (
    APIConflictError,
    APINotFoundError,
    ConfigError,
    ConflictError,
    NotReadyError,
    UnsupportedError,
)
from mlshift._names import check_name
from mlshift._render import (
    MANAGED_BY,
    deployment_name,
    is_managed_route,
    render_virtual_service,
)
from mlshift._state import (
    EndpointState,
    TrafficState,
    VersionSpec,
)
from mlshift.kube._api import (
    DEPLOYMENTS,
    EVENTS,
    PODS,
    REPLICA_SETS,
    KubeAPI,
    Resource,
)
from mlshift.kube._discovery import ISTIO_KINDS, istio_version, resource, versioned
from mlshift.kube._gateway import load_gateway, patch_rules
from mlshift.kube._journal import read_journal
from mlshift.kube._live import (
    HISTORY_ANNOTATION,
    Rollout,
    current_rollout,
    deadline_exceeded,
    dig,
    history_from_annotation,
    history_to_annotation,
    latest_warning,
    pod_problem,
    replica_failure,
    rollout_observed,
    rollout_progress,
    routes_to_traffic,
    same_routes,
    version_from_deployment,
)
from mlshift.kube._mesh import host_conflicts, mesh_warning
from mlshift.kube._propagation import wait_propagated
from mlshift.kube._writes import OWNED_KINDS, check_owned, routes_patch, write_subsets

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._histogram import LatencyHistogram
    from mlshift._plan import Plan, Step
    from mlshift._prediction_stats import PredictionStats

__all__ = ["HISTORY_ANNOTATION", "EngineSettings", "KubernetesEngine"]

log = logging.getLogger("mlshift.kube")

ROUTE_WRITE_ATTEMPTS = 4
"""Writes of the routes when the VirtualService moved on without its routes changing."""


@dataclass(frozen=True)
class EngineSettings:
    """How the engine behaves; the ``Kubernetes`` target fills it from its arguments."""

    namespace: str
    rollout_timeout: float = 300.0
    """Seconds a version may take to become ready (pulling a large image takes minutes)."""
    poll_interval: float = 1.0
    """Seconds between rollout checks; one GET of the Deployment and one LIST of its pods."""
    progress: bool = True
    """Show a progress bar (tqdm.auto: a widget in notebooks) while waiting for a rollout."""
    url: str | None = None
    """The ingress address; ``{endpoint}`` and ``{namespace}`` are filled in."""
    prometheus_url: str = "http://prometheus.istio-system:9090"
    prometheus_token: str | None = None
    """A bearer token for Prometheus (sent as ``Authorization: Bearer ...``)."""
    prometheus_headers: Mapping[str, str] | None = None
    """Extra HTTP headers for Prometheus (a tenant header, a proxy's auth)."""
    routing: str = "istio"
    """``"istio"``, ``"gateway-api"`` or ``"auto"``: which routes ``load`` looks for."""
    ambient: Callable[[], bool] | None = None
    """Whether the namespace is in Istio's ambient mode (metrics then come from the waypoint)."""
    scrape_interval: float = 15.0
    """Seconds between Prometheus's scrapes of the pods; sizes the ``rate()`` windows."""
    settle_time: float = 3.0
    """Seconds a routing change is given to reach the sidecars before a step that depends on
    it, where istiod writes no ``Reconciled`` status (Istio converges in ~1 s, p90 1.5-4.5 s)."""
    propagation_timeout: float = 60.0
    """How long to wait for istiod's ``Reconciled`` condition where it writes one."""


class KubernetesEngine:
    """Runs plans for one endpoint against a cluster (the ``Engine`` protocol).

    Example:
        >>> engine = mlshift.Kubernetes(namespace="ml").engine("churn")  # doctest: +SKIP
        >>> state, history = engine.load("churn")  # doctest: +SKIP
    """

    target = "kubernetes"
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, endpoint: str, api: KubeAPI, settings: EngineSettings) -> None:
        # The endpoint names a Service: a DNS-1035 label, checked before any call (the API
        # server would refuse "9churn" only at the Service, after the Deployment rolled out).
        self.endpoint = check_name(endpoint, kind="endpoint name")
        self.api = api
        self.settings = settings
        self._warned: set[str] = set()
        self._writes_status = False
        """istiod was seen writing ``Reconciled`` here: its absence then means "not yet"."""

    def __repr__(self) -> str:
        return f"<KubernetesEngine {self.settings.namespace}/{self.endpoint}>"

    # -- reading -----------------------------------------------------------------------------

    def _res(self, kind: str) -> Resource:
        """The resource of ``kind`` (Istio's at the version the cluster serves)."""
        return resource(self.api, kind)

    def _get_or_none(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get(res, namespace, name)
        except APINotFoundError:
            return None

    def _deployments(self, namespace: str, endpoint: str) -> dict[str, dict[str, Any]]:
        deps = self.api.list_objects(DEPLOYMENTS, namespace, {"app": endpoint, **MANAGED_BY})
        return {str(dig(d, "metadata", "labels", "version")): d for d in deps}

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Rebuild the endpoint's state and traffic history from the live objects.

        A version counts once its DestinationRule subset exists and a managed route names it
        (a Deployment whose rollout failed is not part of the endpoint yet, so deploying it
        again retries the rollout; other subsets are someone else's).
        A subset whose Deployment was deleted by hand stays, as a version with no image:
        ``status()`` says so, and its traffic can be shifted away and the version removed
        (or deployed again).
        """
        ns = self.settings.namespace
        deployments = self._deployments(ns, name)
        if self.settings.routing == "gateway-api":
            return load_gateway(self.api, ns, name, deployments)
        try:
            dr_resource = self._res("DestinationRule")
        except ConfigError:
            # No Istio CRDs: under "auto" the endpoint may still be routed by an HTTPRoute.
            if self.settings.routing == "auto":
                return load_gateway(self.api, ns, name, deployments)
            raise
        dr = self._get_or_none(dr_resource, ns, name)
        if dr is None and self.settings.routing == "auto":
            found = load_gateway(self.api, ns, name, deployments)
            if found is not None:
                return found
        vs = self._get_or_none(self._res("VirtualService"), ns, name)
        # mlshift's subsets select ``version=<name>`` and nothing else; others are not versions.
        subsets = [
            str(s.get("name"))
            for s in dig(dr, "spec", "subsets") or ()
            if s.get("labels") == {"version": s.get("name")}
        ]
        if vs is not None:
            # A subset no managed route names is a change half-done (a deploy that lost its
            # route write to another notebook, a removal whose subset write failed): not a
            # version yet, or no more. Planning from it would expect routes that are not live.
            routed = {
                str(dig(d, "destination", "subset") or "")
                for r in dig(vs, "spec", "http") or ()
                if is_managed_route(r)
                for d in r.get("route") or ()
            }
            subsets = [v for v in subsets if v in routed]
        versions = tuple(
            version_from_deployment(deployments[v]) if v in deployments else VersionSpec(v)
            for v in subsets
        )
        if not versions:
            return None
        names = [v.name for v in versions]
        traffic, policy = routes_to_traffic(dig(vs, "spec", "http") or [], names)
        hosts = tuple(h for h in dig(vs, "spec", "hosts") or () if h != name)
        state = EndpointState(
            name=name,
            namespace=ns,
            versions=versions,
            traffic=traffic,
            policy=policy,
            hosts=hosts,
            gateways=tuple(dig(vs, "spec", "gateways") or ()),
        )
        history = history_from_annotation(dig(vs, "metadata", "annotations", HISTORY_ANNOTATION))
        return state, history

    def _rollout(self, namespace: str, endpoint: str, dep: Mapping[str, Any]) -> Rollout:
        """The pods (and ReplicaSet) of the Deployment's current rollout; none until observed."""
        if not rollout_observed(dep):
            return Rollout("", ())
        labels = {"app": endpoint, "version": str(dig(dep, "metadata", "labels", "version"))}
        replica_sets = self.api.list_objects(REPLICA_SETS, namespace, labels)
        pods = self.api.list_objects(PODS, namespace, labels)
        return current_rollout(dep, replica_sets, pods)

    def _warning_events(self, namespace: str, names: Iterable[str]) -> str:
        events = self.api.list_objects(EVENTS, namespace, fields={"type": "Warning"})
        return latest_warning(events, names)

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        """Ask the cluster how every version (or each of ``versions``) is doing; ready means
        it can take traffic."""
        deployments = self._deployments(state.namespace, state.name)
        out: dict[str, VersionStatus] = {}
        for spec in state.versions:
            if versions is not None and spec.name not in versions:
                continue
            weight = int(state.traffic.weights.get(spec.name, 0))
            dep = deployments.get(spec.name)
            name = deployment_name(state.name, spec.name)
            if dep is None:
                reason = (
                    f"Deployment {state.namespace}/{name} not found; deploy the version again,"
                    f" or shift its traffic away and ep.remove({spec.name!r})"
                )
                out[spec.name] = VersionStatus(spec.name, False, weight, reason)
                continue
            done, ready, want = rollout_progress(dep)
            reason = ""
            if not done:
                problem, _ = pod_problem(self._rollout(state.namespace, state.name, dep).pods)
                reason = problem or f"{ready}/{want} replicas ready"
            out[spec.name] = VersionStatus(
                spec.name, ready > 0, weight, reason, replicas=want, ready_replicas=ready
            )
        return self._with_warnings(state, out)

    # -- warnings: traffic that may not follow the weights (issue 13, defects 6 and 14) ------

    def _with_warnings(
        self, state: EndpointState, status: dict[str, VersionStatus]
    ) -> dict[str, VersionStatus]:
        """Add to each ready version why its traffic may ignore the weights; log each once."""
        ready = [v for v, s in status.items() if s.ready]
        if not ready:
            return status
        pods = self.api.list_objects(PODS, state.namespace, {"app": state.name})
        # An HTTPRoute wins over a VirtualService on the same Service: only Istio routing
        # can be shadowed by another VirtualService claiming the host.
        conflicts = (
            host_conflicts(
                self.api.list_objects(self._res("VirtualService"), state.namespace),
                name=state.name,
                namespace=state.namespace,
                hosts=[state.name, *state.hosts],
            )
            if state.routing != "gateway-api"
            else ""
        )
        out = dict(status)
        for version in ready:
            mine = [p for p in pods if dig(p, "metadata", "labels", "version") == version]
            warning = "; ".join(w for w in (mesh_warning(mine, state.namespace), conflicts) if w)
            if warning:
                out[version] = dataclasses.replace(out[version], warning=warning)
                if warning not in self._warned:
                    self._warned.add(warning)
                    log.warning("%s/%s %s: %s", state.namespace, state.name, version, warning)
        return out

    def url(self, state: EndpointState) -> str:
        """The ingress ``url`` given to the target, else the in-cluster Service address."""
        if self.settings.url:
            return self.settings.url.format(endpoint=state.name, namespace=state.namespace)
        return f"http://{state.name}.{state.namespace}.svc.cluster.local"

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        """Per-version metrics from Prometheus (Istio's metrics); needs no Kubernetes API."""
        from mlshift.metrics import istio_metrics

        return istio_metrics(
            self.settings.prometheus_url, since=since, step=step, **self._istio_source(state)
        )

    def _istio_source(self, state: EndpointState) -> dict[str, Any]:
        """Where Istio's metrics of ``state`` are and who reports them (the waypoint in
        ambient mode), as ``istio_metrics`` and ``istio_latency_histograms`` take it."""
        gateway = state.routing == "gateway-api"
        ambient = gateway and self.settings.ambient is not None and self.settings.ambient()
        return {
            "service": state.name,
            "namespace": state.namespace,
            "scrape_interval": self.settings.scrape_interval,
            "token": self.settings.prometheus_token,
            "headers": self.settings.prometheus_headers,
            "reporter": "waypoint" if ambient else "destination",
            "version_services": gateway,
        }

    def checkpoint(self, state: EndpointState) -> float:
        """Now, with nothing to read: a whole-window read (``step >= since``, as the canary
        takes) counts only the scrapes inside it (``observed_increase``) once it spans two
        scrapes, so traffic from before this call is not counted.

        Example:
            >>> start = engine.checkpoint(state)  # doctest: +SKIP
        """
        return time.time()

    def latency_histograms(
        self, state: EndpointState, *, since: float
    ) -> dict[str, LatencyHistogram]:
        """Each version's latency histogram over the last ``since`` s, from Istio's
        ``istio_request_duration_milliseconds`` buckets in Prometheus; needs no Kubernetes API."""
        from mlshift.metrics import istio_latency_histograms

        return istio_latency_histograms(
            self.settings.prometheus_url, since=since, **self._istio_source(state)
        )

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        """Each version's prediction counters over the last ``since`` s, from Prometheus.

        The series must carry the pod's ``namespace`` label, as Istio's scrape configuration
        adds it; needs no Kubernetes API.
        """
        from mlshift.metrics import prometheus_predictions

        return prometheus_predictions(
            self.settings.prometheus_url,
            model=state.name,
            since=since,
            labels={"namespace": state.namespace},
            token=self.settings.prometheus_token,
            headers=self.settings.prometheus_headers,
        )

    def journal(self, state: EndpointState, version: str, *, since: float) -> list[dict[str, Any]]:
        """Every running replica's request journal, through the API server's pod proxy.

        A replica that cannot be read raises ``APIError`` naming the pod and the fix.
        """
        return read_journal(self.api, state, version, since=since)

    def revive(self, state: EndpointState) -> list[str]:
        """Refuse: a Deployment restarts its pods by itself (``UnsupportedError``)."""
        raise UnsupportedError(
            f"the kubernetes target restarts versions by itself (each version is a Deployment);"
            f" check ep.status() or `kubectl -n {state.namespace} get pods -l app={state.name}`"
        )

    # -- writing -----------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        """No lock across notebooks on a cluster: a change made meanwhile is caught at write
        time by the resourceVersion and ``previous`` checks (``ConflictError``)."""
        return contextlib.nullcontext()

    def execute(self, plan: Plan) -> None:
        """Run the plan's steps in order; see the module docstring for the rules."""
        state = plan.state
        if any(
            s.kind in ISTIO_KINDS or (s.action == "patch-routes" and s.kind != "HTTPRoute")
            for s in plan.steps
        ):
            istio_version(self.api)  # no Istio: ConfigError before anything is applied
        for step in plan.steps:
            if step.kind in OWNED_KINDS and step.action in ("apply", "delete"):
                # Someone else's churn Service or churn-v1 Deployment: refuse before writing.
                check_owned(self.api, self._res(step.kind), state.namespace, step.name)
        # The subsets this change may touch: the versions before and after it. Any other
        # subset in the DestinationRule is someone else's and stays.
        managed = {*state.version_names, *(s.version for s in plan.steps if s.version)}
        for step in plan.steps:
            if step.kind == "DestinationRule" and step.action == "apply" and step.obj:
                managed.update(str(x.get("name")) for x in step.obj["spec"]["subsets"])
        for index, step in enumerate(plan.steps):
            log.info("%s/%s: %s", state.namespace, state.name, step.describe())
            written: dict[str, Any] | None = None
            if step.action == "apply" and step.kind == "DestinationRule":
                res = self._res(step.kind)
                assert step.obj is not None, f"{step.describe()} has no object"
                obj = versioned(step.obj, res)
                written = write_subsets(self.api, res, state.namespace, obj, managed)
            elif step.action == "apply":
                self._apply(state.namespace, step)
            elif step.action == "wait-ready":
                self._wait_ready(state, step.name, step.version or "")
            elif step.action == "patch-routes":
                obj = step.obj or {}
                routes = list(obj.get("http") or ())
                previous = obj.get("previous")
                if step.kind == "HTTPRoute":
                    rules = list(obj.get("rules") or ())
                    past = None if previous is None else list(previous)
                    patch_rules(self.api, state, rules, plan.history, past)
                    continue
                written = self._patch_routes(
                    state, routes, plan.history, None if previous is None else list(previous)
                )
            elif step.action == "delete":
                self.api.delete(self._res(step.kind), state.namespace, step.name)
            istio = step.kind in ISTIO_KINDS or step.action == "patch-routes"
            if istio and step.action != "wait-ready" and index + 1 < len(plan.steps):
                # A later step depends on this change: let it reach the sidecars first.
                generation = dig(written, "metadata", "generation")
                self._writes_status = wait_propagated(
                    self.api,
                    self._res("VirtualService" if step.action == "patch-routes" else step.kind),
                    state.namespace,
                    state.name,
                    None if step.action == "delete" else int(generation or 0),
                    settle=self.settings.settle_time,
                    timeout=self.settings.propagation_timeout,
                    poll=self.settings.poll_interval,
                    writes_status=self._writes_status,
                )
        deleting = any(
            s.action == "delete" and s.kind in ("VirtualService", "HTTPRoute") for s in plan.steps
        )
        if deleting:
            # Deployments whose rollout failed never joined the endpoint's state: sweep them.
            for dep in self._deployments(state.namespace, state.name).values():
                self.api.delete(DEPLOYMENTS, state.namespace, str(dig(dep, "metadata", "name")))

    def _apply(self, namespace: str, step: Step) -> None:
        assert step.obj is not None, f"{step.describe()} has no object"
        res = self._res(step.kind)
        obj = versioned(step.obj, res)
        try:
            self.api.create(res, namespace, obj)
        except APIConflictError:
            # It exists: merge-patch it to the rendered form (PUT would need its
            # resourceVersion and would drop fields other tools set), if it is mlshift's.
            if step.kind in OWNED_KINDS:
                check_owned(self.api, res, namespace, step.name)
            self.api.patch(res, namespace, step.name, obj)

    def _wait_ready(self, state: EndpointState, name: str, version: str) -> None:
        from tqdm.auto import tqdm

        ns, settings = state.namespace, self.settings
        started = time.monotonic()
        deadline = started + settings.rollout_timeout
        bar = tqdm(desc=f"rollout {name}", total=1, unit="pod", disable=not settings.progress)
        try:
            while True:
                dep = self.api.get(DEPLOYMENTS, ns, name)
                done, ready, want = rollout_progress(dep)
                bar.total, bar.n = want, min(ready, want)
                bar.refresh()
                if done:
                    log.info("%s/%s ready in %.1f s", ns, name, time.monotonic() - started)
                    return
                rollout = self._rollout(ns, state.name, dep)
                problem, fatal = pod_problem(rollout.pods)
                failure = replica_failure(dep)  # quota, Pod Security: pods cannot be made
                if failure and not fatal:
                    problem, fatal = failure, True
                stuck = deadline_exceeded(dep)
                timed_out = time.monotonic() >= deadline
                if fatal or stuck or timed_out:
                    # The events name the cause (FailedCreate: a PodSecurity rejection, a
                    # quota) where ProgressDeadlineExceeded only says that time ran out.
                    problem = problem or self._warning_events(ns, rollout.names(name)) or stuck
                    waited = time.monotonic() - started
                    why = "" if fatal else f" within {waited:.0f} s (rollout_timeout)"
                    raise NotReadyError(
                        f"version {version!r} ({ns}/{name}) did not become ready{why}: "
                        f"{problem or f'{ready}/{want} replicas ready'}. No route sends it"
                        f" traffic. See `kubectl -n {ns} describe deployment {name}`; fix the"
                        " cause (image, resources, model) and deploy again, or ep.delete()",
                        reason=(problem or "timeout").split(":")[0],
                    )
                time.sleep(settings.poll_interval)
        finally:
            bar.close()

    def _patch_routes(
        self,
        state: EndpointState,
        managed: list[dict[str, Any]],
        history: Sequence[TrafficState],
        previous: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        ns, name = state.namespace, state.name
        annotations = {HISTORY_ANNOTATION: history_to_annotation(history)}
        res = self._res("VirtualService")
        for attempt in range(1, ROUTE_WRITE_ATTEMPTS + 1):
            live = self._get_or_none(res, ns, name)
            if previous is not None and not same_routes(dig(live, "spec", "http"), previous):
                raise ConflictError(
                    f"the routes of VirtualService {ns}/{name} changed since they were read:"
                    " someone else moved the traffic meanwhile, and nothing was written."
                    " Re-read them (ep.status()) and try again",
                )
            try:
                if live is None:
                    vs = versioned(render_virtual_service(state), res)
                    vs["spec"]["http"] = managed
                    vs["metadata"]["annotations"] = annotations
                    return self.api.create(res, ns, vs)
                return self.api.patch(
                    res, ns, name, routes_patch(state, live, managed, annotations)
                )
            except APIConflictError as exc:
                # istiod writes the Reconciled status about a second after each change, which
                # moves the resourceVersion without touching the routes: with the routes
                # still as read, read again and write again.
                if previous is None or attempt == ROUTE_WRITE_ATTEMPTS:
                    raise ConflictError(
                        f"VirtualService {ns}/{name} changed while mlshift wrote its routes"
                        " (409); nothing was written. Re-read the endpoint and try again (the"
                        " SDK's verbs do)"
                    ) from exc
                log.info("VirtualService %s/%s moved on (409); writing again", ns, name)
        raise AssertionError("unreachable")  # pragma: no cover
