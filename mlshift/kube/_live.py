"""Reading an endpoint back from live objects: pure functions over the API's dicts.

What a Deployment's status says about its rollout (as ``kubectl rollout status`` reads it),
which pods and ReplicaSet belong to its current rollout and why they are not ready, which
traffic the managed routes of a VirtualService carry and whether they still are what a
change was computed from, the version spec a Deployment was rendered from, and the traffic
history kept in an annotation. No I/O here; the engine fetches the objects.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlshift._durations import parse_duration
from mlshift._render import MANAGED_ROUTE, is_managed_route
from mlshift._state import (
    HeaderRoute,
    Mirror,
    PodOptions,
    Resources,
    RoutePolicy,
    TrafficState,
    VersionSpec,
)
from mlshift._workload import (
    AUTOSCALE_ANNOTATION,
    GPU_RESOURCE,
    INJECT_LABEL,
    POD_MONITOR_ANNOTATION,
)

__all__ = [
    "FATAL_REASONS",
    "HISTORY_ANNOTATION",
    "HISTORY_MAX_CHARS",
    "Rollout",
    "current_rollout",
    "deadline_exceeded",
    "dig",
    "history_from_annotation",
    "history_to_annotation",
    "latest_warning",
    "pod_problem",
    "replica_failure",
    "rollout_observed",
    "rollout_progress",
    "routes_to_traffic",
    "same_routes",
    "version_from_deployment",
]

log = logging.getLogger("mlshift.kube")

HISTORY_ANNOTATION = "mlshift.io/traffic-history"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
SHA_ANNOTATION = "mlshift.io/model-sha256"
# Annotations share 256 KiB per object; the history keeps the newest entries within 32 KiB.
HISTORY_MAX_CHARS = 32_000
# Pod states that will not cure themselves within a rollout: report them at once.
# A first ErrImagePull right after a push is often transient (the registry is still settling,
# a node's first pull times out): fatal only when its message says the image is not there or
# may not be pulled (PULL_FATAL), or once the kubelet backs off (ImagePullBackOff).
FATAL_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


PULL_FATAL = (
    "unauthorized",
    "authentication required",
    "401",
    "403",
    "forbidden",
    "denied",
    "not found",
    "manifest unknown",
    "name unknown",
)


def dig(obj: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = obj
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def rollout_progress(dep: Mapping[str, Any]) -> tuple[bool, int, int]:
    """Return (rollout finished, ready replicas, wanted replicas) of a Deployment.

    Finished means what ``kubectl rollout status`` checks: the controller saw the latest
    spec, every wanted replica runs the new template, and all of them are ready.

    Example:
        >>> rollout_progress({"spec": {"replicas": 2}, "status": {"updatedReplicas": 2,
        ...                   "readyReplicas": 1}})
        (False, 1, 2)
    """
    want = int(dig(dep, "spec", "replicas") or 1)
    status = dig(dep, "status") or {}
    ready = int(status.get("readyReplicas") or 0)
    generation = dig(dep, "metadata", "generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return False, ready, want
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or updated)
    return updated >= want and ready >= want and total <= updated, ready, want


def rollout_observed(dep: Mapping[str, Any]) -> bool:
    """Tell whether the Deployment controller has seen the latest spec.

    Until it has, ``status`` (replicas, conditions, the revision annotation) still describes
    the previous rollout: right after a Deployment is applied again, its old
    ``ProgressDeadlineExceeded`` condition and its old pods say nothing about the new one.

    Example:
        >>> rollout_observed({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}})
        False
    """
    generation = dig(dep, "metadata", "generation")
    if generation is None:
        return True
    observed = dig(dep, "status", "observedGeneration")
    return observed is not None and int(observed) >= int(generation)


def replica_failure(dep: Mapping[str, Any]) -> str:
    """The Deployment's ``ReplicaFailure`` reason ("" if none or stale): pods cannot be made.

    A quota or a Pod Security rejection does not cure itself; fail at once, not at the
    progress deadline.

    Example:
        >>> replica_failure({"status": {"conditions": [{"type": "ReplicaFailure",
        ...     "status": "True", "reason": "FailedCreate", "message": "exceeded quota"}]}})
        'FailedCreate: exceeded quota'
    """
    if not rollout_observed(dep):
        return ""
    for cond in dig(dep, "status", "conditions") or ():
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"{cond.get('reason') or 'ReplicaFailure'}: {cond.get('message') or ''}".strip()
    return ""


def deadline_exceeded(dep: Mapping[str, Any]) -> str:
    """The ``ProgressDeadlineExceeded`` reason of the current rollout ("" if none or stale)."""
    if not rollout_observed(dep):
        return ""
    for cond in dig(dep, "status", "conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"ProgressDeadlineExceeded: {cond.get('message') or ''}".strip()
    return ""


@dataclass(frozen=True)
class Rollout:
    """The current rollout of a Deployment: its newest ReplicaSet (if known) and its pods."""

    replica_set: str
    pods: tuple[Mapping[str, Any], ...]

    def names(self, deployment: str) -> frozenset[str]:
        """The ``involvedObject`` names its events carry: the Deployment, ReplicaSet, pods."""
        pods = (str(dig(p, "metadata", "name")) for p in self.pods)
        return frozenset({deployment, self.replica_set, *pods} - {""})


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int(dig(obj, "metadata", "annotations", REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def _model_image(template: Mapping[str, Any] | None) -> object:
    containers = dig(template, "spec", "containers") or [{}]
    container = next((c for c in containers if c.get("name") == "model"), containers[0])
    return container.get("image")


def current_rollout(
    dep: Mapping[str, Any],
    replica_sets: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
) -> Rollout:
    """Pick the pods of the Deployment's newest ReplicaSet out of all its version's pods.

    The newest ReplicaSet is the one whose revision annotation matches the Deployment's (the
    highest revision when none does); its ``pod-template-hash`` label marks its pods. Pods of
    an earlier rollout (say an ``ImagePullBackOff`` left by a broken image, which stays until
    a new pod is ready) are not judged. Without ReplicaSets, pods running the Deployment's
    current image stand in. Terminating pods never count.

    Example:
        >>> dep = {"metadata": {"name": "d", "annotations": {REVISION_ANNOTATION: "2"}}}
        >>> rs = [{"metadata": {"name": f"d-h{r}", "labels": {HASH_LABEL: f"h{r}"},
        ...        "annotations": {REVISION_ANNOTATION: str(r)}}} for r in (1, 2)]
        >>> pods = [{"metadata": {"name": f"p{r}", "labels": {HASH_LABEL: f"h{r}"}}}
        ...         for r in (1, 2)]
        >>> [dig(p, "metadata", "name") for p in current_rollout(dep, rs, pods).pods]
        ['p2']
    """
    name = dig(dep, "metadata", "name")
    mine = [
        rs
        for rs in replica_sets
        if not dig(rs, "metadata", "ownerReferences")
        or any(o.get("name") == name for o in dig(rs, "metadata", "ownerReferences") or ())
    ]
    live = [p for p in pods if not dig(p, "metadata", "deletionTimestamp")]
    wanted = _revision(dep)
    newest = next((rs for rs in mine if wanted and _revision(rs) == wanted), None)
    newest = newest or max(mine, key=_revision, default=None)
    pod_hash = dig(newest, "metadata", "labels", HASH_LABEL)
    if newest is None or not pod_hash:
        image = _model_image(dig(dep, "spec", "template"))
        return Rollout("", tuple(p for p in live if _model_image(p) == image))
    return Rollout(
        str(dig(newest, "metadata", "name") or ""),
        tuple(p for p in live if dig(p, "metadata", "labels", HASH_LABEL) == pod_hash),
    )


def latest_warning(events: Iterable[Mapping[str, Any]], names: Iterable[str]) -> str:
    """The newest Warning event about one of ``names`` (exact ``involvedObject`` names).

    Matching exact names, not a prefix, keeps ``churn-v10``'s events out of ``churn-v1``.

    Example:
        >>> latest_warning([{"involvedObject": {"name": "churn-v10-abc"}, "reason": "X"}],
        ...                ["churn-v1"])
        ''
    """
    wanted = set(names)
    mine = [e for e in events if str(dig(e, "involvedObject", "name") or "") in wanted]
    if not mine:
        return ""

    def when(event: Mapping[str, Any]) -> str:
        # RFC 3339 in UTC sorts as text; list order decides among equal times.
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or dig(event, "metadata", "creationTimestamp")
            or ""
        )

    last = max(reversed(mine), key=when)  # max keeps the first of equals: the latest listed
    return f"{last.get('reason') or 'Warning'}: {last.get('message') or ''}".strip()


def pod_problem(pods: Iterable[Mapping[str, Any]]) -> tuple[str, bool]:
    """Return (why the pods are not ready, whether it is fatal) from their status.

    Fatal reasons (``FATAL_REASONS``: image pulls, crash loops, bad config) do not cure
    themselves; ``Unschedulable`` may (a cluster autoscaler can add a node), so the wait
    goes on and reports it at the timeout.

    Example:
        >>> pod_problem([{"metadata": {"name": "p"}, "status": {"containerStatuses": [
        ...     {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such"}}}]}}])
        ('ImagePullBackOff: no such (pod p)', True)
    """
    slow = ""
    for pod in pods:
        name = dig(pod, "metadata", "name") or "?"
        status = dig(pod, "status") or {}
        statuses = [
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ]
        for cs in statuses:
            waiting = dig(cs, "state", "waiting") or {}
            reason = str(waiting.get("reason") or "")
            message = str(waiting.get("message") or "").strip()
            if reason == "ErrImagePull" and any(m in message.lower() for m in PULL_FATAL):
                return f"{reason}: {message} (pod {name})", True
            if reason == "ErrImagePull" and not slow:
                slow = f"{reason}: {message} (pod {name})"
            if reason in FATAL_REASONS:
                return f"{reason}: {message} (pod {name})".replace(":  (", " ("), True
            terminated = dig(cs, "lastState", "terminated") or {}
            if terminated and not slow:
                code = terminated.get("exitCode")
                slow = (
                    f"container exited ({terminated.get('reason') or ''}, code {code}) (pod {name})"
                )
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                reason = str(cond.get("reason") or "Unschedulable")
                slow = slow or f"{reason}: {cond.get('message') or ''} (pod {name})"
    return slow, False


def _duration_s(text: object) -> float | None:
    if not text:
        return None
    try:
        return parse_duration(str(text), what="route timeout")
    except ValueError:
        log.warning("cannot read the route timeout %r; ignoring it", text)
        return None


def routes_to_traffic(
    routes: Sequence[Mapping[str, Any]], versions: Sequence[str]
) -> tuple[TrafficState, RoutePolicy]:
    """Read weights, header rules, mirror and policy back from mlshift's managed routes.

    Routes to versions not in ``versions`` are dropped (with a warning): the next write
    would drop them anyway.
    """
    main = next((r for r in routes if r.get("name") == MANAGED_ROUTE), None)
    if main is None:
        return TrafficState(), RoutePolicy()
    dests = list(main.get("route") or ())
    weights: dict[str, int] = {}
    for d in dests:
        subset = str(dig(d, "destination", "subset") or "")
        # Istio: a lone destination without a weight takes everything.
        weight = d.get("weight", 100 if len(dests) == 1 else 0)
        if subset in versions:
            weights[subset] = int(weight or 0)
        else:
            log.warning("route %s sends %s %% to unknown version %r", MANAGED_ROUTE, weight, subset)
    mirror = None
    mirror_subset = dig(main, "mirror", "subset")
    if mirror_subset in versions:
        percent = dig(main, "mirrorPercentage", "value")
        mirror = Mirror(str(mirror_subset), float(100.0 if percent is None else percent))
    headers = []
    prefix = MANAGED_ROUTE + "-header-"
    header_routes = [r for r in routes if str(r.get("name") or "").startswith(prefix)]
    header_routes.sort(key=lambda r: int(str(r["name"])[len(prefix) :] or 0))
    for r in header_routes:
        match = dict((r.get("match") or [{}])[0].get("headers") or {})
        subset = dig((r.get("route") or [{}])[0], "destination", "subset")
        if not match or subset not in versions:
            continue
        header, cond = next(iter(match.items()))
        kind = next((k for k in ("exact", "prefix", "regex") if k in cond), "exact")
        headers.append(HeaderRoute(str(subset), header, str(cond[kind]), kind))  # type: ignore[arg-type]
    retries = main.get("retries") or {}
    defaults = RoutePolicy()
    policy = RoutePolicy(
        timeout_s=_duration_s(main.get("timeout")),
        attempts=int(retries.get("attempts", defaults.attempts)),
        per_try_timeout_s=_duration_s(retries.get("perTryTimeout")),
        retry_on=str(retries.get("retryOn", defaults.retry_on)),
    )
    return TrafficState(weights, tuple(headers), mirror), policy


# Every key the renderer writes into a managed route, at any depth (mlshift._render). Keys
# of a live route outside this set were added by the API server (defaults) or by another
# tool and are not part of what mlshift compares.
ROUTE_KEYS = frozenset(
    {
        "name",
        "match",
        "headers",
        "exact",
        "prefix",
        "regex",
        "route",
        "destination",
        "host",
        "subset",
        "port",
        "number",
        "weight",
        "mirror",
        "mirrorPercentage",
        "value",
        "timeout",
        "retries",
        "attempts",
        "retryOn",
        "perTryTimeout",
    }
)


def _same(live: object, written: object, *, any_key: bool = False) -> bool:
    if isinstance(live, Mapping) and isinstance(written, Mapping):
        keys = set(written) | {k for k in live if any_key or k in ROUTE_KEYS}
        return all(
            k in live and k in written and _same(live[k], written[k], any_key=k == "headers")
            for k in keys
        )
    if isinstance(live, list) and isinstance(written, list):
        return len(live) == len(written) and all(map(_same, live, written))
    numbers = (int, float)
    if isinstance(live, numbers) and isinstance(written, numbers):
        if isinstance(live, bool) or isinstance(written, bool):
            return live is written
        return math.isclose(float(live), float(written), rel_tol=0, abs_tol=1e-9)
    return live == written


def same_routes(
    live: Iterable[Mapping[str, Any]] | None, previous: Sequence[Mapping[str, Any]]
) -> bool:
    """Tell whether the managed routes among ``live`` are still ``previous``.

    Compared as mlshift wrote them: keys it never writes (server defaults, another tool's
    additions) are ignored, numbers compare by value (``25`` equals ``25.0``), order counts
    (the first matching route wins). Header names under ``headers`` are data: all count.

    Example:
        >>> main = {"name": "mlshift", "route": [{"destination": {"subset": "v1"}, "weight": 100}]}
        >>> same_routes([{"name": "admin"}, {**main, "corsPolicy": {}}], [main])
        True
        >>> same_routes([{"name": "mlshift", "route": []}], [main])
        False
    """
    managed = [r for r in live or () if is_managed_route(r)]
    return _same(managed, list(previous))


def _monitoring(dep: Mapping[str, Any]) -> dict[str, Any]:
    interval = dig(dep, "metadata", "annotations", POD_MONITOR_ANNOTATION)
    if not interval:
        return {}
    try:
        return {"pod_monitor": True, "scrape_interval_s": parse_duration(str(interval))}
    except ValueError:
        log.warning("ignoring an unreadable %s annotation %r", POD_MONITOR_ANNOTATION, interval)
        return {"pod_monitor": True}


def _pod_options(
    dep: Mapping[str, Any], template: Mapping[str, Any], container: Mapping[str, Any]
) -> PodOptions:
    """The pod options a version's pod template was rendered with (defaults if absent)."""
    pod = dig(template, "spec") or {}
    defaults = PodOptions()
    startup = container.get("startupProbe") or {}
    startup_s = defaults.startup_s
    if startup:
        startup_s = float(startup.get("periodSeconds") or 10) * float(
            startup.get("failureThreshold") or 3
        )
    command = dig(container, "lifecycle", "preStop", "exec", "command") or []
    drain_s = 0.0
    if command:
        try:
            drain_s = float(str(command[-1]).rsplit("(", 1)[-1].rstrip(")"))
        except ValueError:
            drain_s = defaults.drain_s
    return PodOptions(
        startup_s=startup_s,
        drain_s=drain_s,
        service_account=pod.get("serviceAccountName") or None,
        image_pull_secrets=tuple(str(s.get("name")) for s in pod.get("imagePullSecrets") or ()),
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(dict(t) for t in pod.get("tolerations") or ()),
        sidecar=str(dig(template, "metadata", "labels", INJECT_LABEL) or "") == "true",
        **_monitoring(dep),
    )


def _autoscale(dep: Mapping[str, Any]) -> tuple[int, int, int] | None:
    text = dig(dep, "metadata", "annotations", AUTOSCALE_ANNOTATION)
    try:
        low, high, cpu = (int(part) for part in str(text).split(","))
    except ValueError:
        if text:
            log.warning("ignoring an unreadable %s annotation %r", AUTOSCALE_ANNOTATION, text)
        return None
    return low, high, cpu


def version_from_deployment(dep: Mapping[str, Any]) -> VersionSpec:
    """Rebuild a version's spec from its live Deployment (image, model digest, size, trust)."""
    version = str(dig(dep, "metadata", "labels", "version"))
    template = dig(dep, "spec", "template") or {}
    containers = dig(template, "spec", "containers") or [{}]
    container = next((c for c in containers if c.get("name") == "model"), containers[0])
    res = container.get("resources") or {}
    defaults = Resources()
    resources = Resources(
        cpu_request=str(dig(res, "requests", "cpu") or defaults.cpu_request),
        cpu_limit=str(dig(res, "limits", "cpu") or defaults.cpu_limit),
        memory_request=str(dig(res, "requests", "memory") or defaults.memory_request),
        memory_limit=str(dig(res, "limits", "memory") or defaults.memory_limit),
        gpus=int(dig(res, "limits", GPU_RESOURCE) or 0),
    )
    env = {str(e.get("name")): e.get("value") for e in container.get("env") or ()}
    autoscale = _autoscale(dep)
    return VersionSpec(
        name=version,
        model_sha256=str(dig(template, "metadata", "annotations", SHA_ANNOTATION) or ""),
        image=container.get("image"),
        # With an autoscaler, the live count is its doing; the spec holds its minimum.
        replicas=autoscale[0] if autoscale else int(dig(dep, "spec", "replicas") or 1),
        resources=resources,
        trust_pickle=env.get("MLSHIFT_TRUST_PICKLE") == "1",
        pod=_pod_options(dep, template, container),
        autoscale=autoscale,
    )


def history_to_annotation(history: Sequence[TrafficState]) -> str:
    """The history as compact JSON, oldest entries dropped to stay under the size bound."""
    entries = [t.to_json() for t in history]
    text = json.dumps(entries, separators=(",", ":"))
    while len(text) > HISTORY_MAX_CHARS and entries:
        entries.pop(0)
        text = json.dumps(entries, separators=(",", ":"))
    return text


def history_from_annotation(text: str | None) -> tuple[TrafficState, ...]:
    """Read the history annotation back; an unreadable one is an empty history (logged)."""
    if not text:
        return ()
    try:
        return tuple(TrafficState.from_json(item) for item in json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring an unreadable %s annotation: %s", HISTORY_ANNOTATION, exc)
        return ()
