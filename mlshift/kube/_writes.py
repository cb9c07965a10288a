"""Writes that must not clobber what others own: foreign objects, foreign subsets.

- **No takeover.** mlshift creates a version's Deployment and the endpoint's Service and, when
  they exist, merge-patches them to the rendered form. An existing object without mlshift's
  ``app.kubernetes.io/managed-by=mlshift`` label is someone else's (a ``churn`` Service that
  selects other pods, a ``churn-v1`` Deployment of another team): it is refused with a
  ``DeployError`` before anything is written, never overwritten or deleted.
- **DestinationRule subsets, read-modify-write.** The rule's ``subsets`` is an atomic list
  for a merge patch; writing mlshift's list whole erases subsets others added and loses a
  concurrent writer's subset. So the rule is read, mlshift's subsets (those named after the
  endpoint's versions, then and now) are replaced in the live list and the rest kept in
  place, and the patch carries the ``resourceVersion`` read: a 409 means someone wrote in
  between, and the read-modify-write runs again on what is now live.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mlshift._exceptions import APIConflictError, APINotFoundError, ConflictError, DeployError
from mlshift._render import MANAGED_BY, merge_routes, vs_gateways
from mlshift._state import EndpointState
from mlshift.kube._api import KubeAPI, Resource
from mlshift.kube._live import dig

__all__ = ["OWNED_KINDS", "check_owned", "routes_patch", "write_subsets"]

log = logging.getLogger("mlshift.kube")

OWNED_KINDS = frozenset({"Deployment", "Service"})
"""Kinds whose whole spec mlshift renders: an existing one must carry mlshift's label."""
SUBSET_ATTEMPTS = 8


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def check_owned(api: KubeAPI, res: Resource, namespace: str, name: str) -> bool:
    """Return whether ``name`` exists; raise ``DeployError`` if it exists and is not mlshift's.

    Example:
        >>> check_owned(api, SERVICES, "ml", "churn")  # doctest: +SKIP
        False
    """
    try:
        live = api.get(res, namespace, name)
    except APINotFoundError:
        return False
    if not _ours(live):
        ((key, value),) = MANAGED_BY.items()
        raise DeployError(
            f"{res.kind} {namespace}/{name} already exists and is not managed by mlshift (no"
            f" label {key}={value}); mlshift will not overwrite or delete it, and nothing was"
            " changed. Choose another endpoint or version name, remove that object, or hand"
            f" it over: `kubectl -n {namespace} label {res.kind.lower()} {name} {key}={value}`"
        )
    return True


def _merged_subsets(
    live: Sequence[Mapping[str, Any]],
    wanted: Sequence[Mapping[str, Any]],
    managed: Collection[str],
) -> list[dict[str, Any]]:
    """Live subsets with mlshift's (named in ``managed``) swapped for ``wanted``, in place."""
    by_name = {str(s.get("name")): dict(s) for s in wanted}
    out: list[dict[str, Any]] = []
    for subset in live:
        name = str(subset.get("name"))
        if name not in managed:
            out.append(dict(subset))  # someone else's: kept as it is, where it is
        elif name in by_name:
            out.append(by_name.pop(name))
    return out + list(by_name.values())


def write_subsets(
    api: KubeAPI,
    res: Resource,
    namespace: str,
    obj: Mapping[str, Any],
    managed: Collection[str],
) -> dict[str, Any]:
    """Create the DestinationRule ``obj``, or set mlshift's subsets in the live one.

    ``managed`` names every subset mlshift owns in this change (the versions before and
    after it), so a subset of a removed version goes and others' subsets stay.
    """
    name = str((obj.get("metadata") or {}).get("name"))
    wanted = list((obj.get("spec") or {}).get("subsets") or ())
    for _attempt in range(SUBSET_ATTEMPTS):
        try:
            live = api.get(res, namespace, name)
        except APINotFoundError:
            try:
                return api.create(res, namespace, obj)
            except APIConflictError:
                continue  # created meanwhile by another writer: read it and merge
        spec = live.get("spec") or {}
        subsets = _merged_subsets(spec.get("subsets") or (), wanted, managed)
        patch: dict[str, Any] = {
            "metadata": {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")},
            "spec": {"subsets": subsets},
        }
        if spec.get("host") != (obj.get("spec") or {}).get("host"):
            patch["spec"]["host"] = (obj.get("spec") or {}).get("host")
        try:
            return api.patch(res, namespace, name, patch)
        except APIConflictError:
            log.info(
                "DestinationRule %s/%s changed while writing its subsets; again", namespace, name
            )
    raise ConflictError(
        f"DestinationRule {namespace}/{name} kept changing while mlshift wrote its subsets"
        f" ({SUBSET_ATTEMPTS} attempts); try again"
    )


def routes_patch(
    state: EndpointState,
    live: Mapping[str, Any],
    managed: list[dict[str, Any]],
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    """The merge patch for a live VirtualService: mlshift's routes swapped, the rest kept."""
    spec = live.get("spec") or {}
    patch_spec: dict[str, Any] = {"http": merge_routes(spec.get("http"), managed)}
    wanted = [state.name, *state.hosts]
    hosts = list(spec.get("hosts") or ())
    if any(h not in hosts for h in wanted):
        patch_spec["hosts"] = [*hosts, *(h for h in wanted if h not in hosts)]
    gateways = list(spec.get("gateways") or ())
    wanted_gateways = vs_gateways(state.gateways)  # with "mesh" (issue 13, defect 6)
    if any(g not in gateways for g in wanted_gateways):
        patch_spec["gateways"] = [*gateways, *(g for g in wanted_gateways if g not in gateways)]
    metadata: dict[str, Any] = {"annotations": dict(annotations)}
    version = dig(live, "metadata", "resourceVersion")
    if version:
        metadata["resourceVersion"] = version
    return {"metadata": metadata, "spec": patch_spec}
