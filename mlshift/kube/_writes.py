"""Writes that must not clobber what others own.

- **No takeover.** mlshift creates a version's Deployment and the endpoint's Service and, when
  they exist, merge-patches them to the rendered form. An existing object without mlshift's
  ``app.kubernetes.io/managed-by=mlshift`` label is someone else's (a ``churn`` Service that
  selects other pods, a ``churn-v1`` Deployment of another team): it is refused with a
  ``DeployError`` before anything is written, never overwritten or deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlshift._exceptions import APINotFoundError, DeployError
from mlshift._render import MANAGED_BY
from mlshift.kube._api import KubeAPI, Resource

__all__ = ["OWNED_KINDS", "check_owned"]

log = logging.getLogger("mlshift.kube")

OWNED_KINDS = frozenset({"Deployment", "Service"})
"""Kinds whose whole spec mlshift renders: an existing one must carry mlshift's label."""


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
