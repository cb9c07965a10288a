"""Traffic that may ignore the weights, found from live objects: pure functions.

Two ways mlshift's weights can silently do nothing on a real cluster: pods without Istio's
proxy (injection off, or ambient mode without a waypoint), and another VirtualService that
claims the endpoint's host first (for sidecars Istio uses the oldest). The engine lists the
pods and VirtualServices and puts what these functions say into ``ep.status()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlshift.kube._live import dig

__all__ = ["host_conflicts", "mesh_warning"]

PROXY_CONTAINER = "istio-proxy"
AMBIENT_ANNOTATION = "ambient.istio.io/redirection"


def _has_proxy(pod: Mapping[str, Any]) -> bool:
    spec = dig(pod, "spec") or {}
    # A native sidecar (Kubernetes 1.29+, Istio 1.19+) is an init container.
    containers = [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]
    return any(c.get("name") == PROXY_CONTAINER for c in containers)


def mesh_warning(pods: Iterable[Mapping[str, Any]], namespace: str) -> str:
    """Why traffic to these pods may ignore the weights ("" when each has its proxy).

    A pod without Istio's sidecar means injection is off where it runs: its requests go
    unreported (``reporter="destination"``: ``ep.metrics()`` misses them), and callers in
    the same place, without sidecars of their own, reach every version through the Service,
    whatever the weights. In ambient mode (the CNI's redirection annotation) the weights apply
    only through a waypoint proxy, which mlshift cannot see from its namespaced Role.

    Example:
        >>> mesh_warning([{"metadata": {"name": "p"}, "spec": {"containers": [
        ...     {"name": "model"}]}}], "ml")[:40]
        'pod p runs without the istio-proxy sidec'
    """
    live = [p for p in pods if not dig(p, "metadata", "deletionTimestamp")]
    bare = [p for p in live if not _has_proxy(p)]
    if not bare:
        return ""
    name = dig(bare[0], "metadata", "name") or "?"
    if all(dig(p, "metadata", "annotations", AMBIENT_ANNOTATION) == "enabled" for p in bare):
        return (
            f"pod {name} is in Istio ambient mode: weights apply only through a waypoint"
            f" proxy; check `kubectl get ns {namespace} -L istio.io/use-waypoint` (or the"
            " Service's label), and prefer Gateway API routing there"
        )
    others = f" (and {len(bare) - 1} more)" if len(bare) > 1 else ""
    return (
        f"pod {name}{others} runs without the istio-proxy sidecar: callers without a"
        " sidecar reach every version through the Service, ignoring the weights, and its"
        f" requests are missing from ep.metrics(). Enable injection (`kubectl label namespace"
        f" {namespace} istio-injection=enabled`, or check the injector webhook) and deploy"
        " again, or route through a gateway"
    )


def _host_names(host: str, namespace: str) -> set[str]:
    """The names a VirtualService host means: a short name is resolved in its namespace."""
    host = host.strip().lower()
    parts = host.split(".")
    if len(parts) == 1:
        parts = [host, namespace]
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        service = f"{parts[0]}.{parts[1]}"
        return {service, f"{service}.svc", f"{service}.svc.cluster.local"}
    return {host}


def host_conflicts(
    virtual_services: Iterable[Mapping[str, Any]],
    *,
    name: str,
    namespace: str,
    hosts: Iterable[str],
) -> str:
    """Name the other VirtualServices that claim one of the endpoint's hosts ("" if none).

    For sidecars Istio does not merge VirtualServices of one host: the oldest wins and the
    others are ignored. An older one means mlshift's weights do nothing; a newer one is
    ignored itself, which its owner should know.

    Example:
        >>> old = {"metadata": {"name": "legacy", "creationTimestamp": "2025-01-01T00:00:00Z"},
        ...        "spec": {"hosts": ["churn.ml.svc.cluster.local"]}}
        >>> host_conflicts([old], name="churn", namespace="ml", hosts=["churn"])[:47]
        'VirtualService ml/legacy also claims host churn'
    """
    wanted = {h: _host_names(h, namespace) for h in hosts}
    ours = next((v for v in virtual_services if dig(v, "metadata", "name") == name), None)
    our_time = str(dig(ours, "metadata", "creationTimestamp") or "")
    problems = []
    for vs in virtual_services:
        other = str(dig(vs, "metadata", "name") or "")
        if other == name or dig(vs, "metadata", "deletionTimestamp"):
            continue
        theirs = set().union(
            *(_host_names(str(h), namespace) for h in dig(vs, "spec", "hosts") or ())
        )
        shared = [h for h, names in wanted.items() if names & theirs]
        if not shared:
            continue
        when = str(dig(vs, "metadata", "creationTimestamp") or "")
        # RFC 3339 in UTC sorts as text; a VirtualService not created yet is the newest.
        if not our_time or (when and when < our_time):
            problems.append(
                f"VirtualService {namespace}/{other} also claims host {', '.join(shared)} and"
                " is older: Istio applies its routes, so mlshift's weights do nothing. Remove"
                f" the host from it (kubectl -n {namespace} edit virtualservice {other})"
            )
        else:
            problems.append(
                f"VirtualService {namespace}/{other} also claims host {', '.join(shared)}:"
                " Istio keeps the oldest (mlshift's) and ignores its routes. Remove the host"
                " from it"
            )
    return "; ".join(problems)
