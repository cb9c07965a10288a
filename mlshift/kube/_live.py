"""Reading an endpoint back from live objects: pure functions over the API's dicts.

What a Deployment's status says about its rollout (as ``kubectl rollout status`` reads it),
why its pods are not ready, which traffic the managed routes of a VirtualService carry, the
version spec a Deployment was rendered from, and the traffic history kept in an annotation.
No I/O here; the engine fetches the objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlshift._durations import parse_duration
from mlshift._render import MANAGED_ROUTE
from mlshift._state import HeaderRoute, Mirror, Resources, RoutePolicy, TrafficState, VersionSpec

__all__ = [
    "FATAL_REASONS",
    "HISTORY_ANNOTATION",
    "HISTORY_MAX_CHARS",
    "deadline_exceeded",
    "dig",
    "history_from_annotation",
    "history_to_annotation",
    "pod_problem",
    "rollout_progress",
    "routes_to_traffic",
    "version_from_deployment",
]

log = logging.getLogger("mlshift.kube")

HISTORY_ANNOTATION = "mlshift.io/traffic-history"
SHA_ANNOTATION = "mlshift.io/model-sha256"
# Annotations share 256 KiB per object; the history keeps the newest entries within 32 KiB.
HISTORY_MAX_CHARS = 32_000
# Pod states that will not cure themselves within a rollout: report them at once.
FATAL_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
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


def deadline_exceeded(dep: Mapping[str, Any]) -> str:
    for cond in dig(dep, "status", "conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"ProgressDeadlineExceeded: {cond.get('message') or ''}".strip()
    return ""


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
            if reason in FATAL_REASONS:
                message = str(waiting.get("message") or "").strip()
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


def version_from_deployment(dep: Mapping[str, Any]) -> VersionSpec:
    """Rebuild a version's spec from its live Deployment (image, model digest, size)."""
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
    )
    return VersionSpec(
        name=version,
        model_sha256=str(dig(template, "metadata", "annotations", SHA_ANNOTATION) or ""),
        image=container.get("image"),
        replicas=int(dig(dep, "spec", "replicas") or 1),
        resources=resources,
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
