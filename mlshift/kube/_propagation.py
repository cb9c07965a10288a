"""Waiting until a routing change has reached the sidecars, before a step that depends on it.

"Applied" means stored by the API server, not pushed to the proxies: ``promote`` followed at
once by ``remove`` used to delete a subset while sidecars still routed to it (503 NR). So
after an Istio write that a later step of the same plan depends on, the engine waits:

- where istiod writes status (``PILOT_ENABLE_STATUS``), for the object's ``Reconciled``
  condition to be true for the generation just written (every proxy has it), up to
  ``timeout``;
- where no status is written, for the target's ``settle_time`` (default 3 s; Istio usually
  converges in about a second, p90 1.5-4.5 s).

An object istiod has not marked yet (one created moments ago) has no ``Reconciled``
condition either: once an engine has seen the condition on any object, the cluster is known
to write it, and its absence means "not yet" (wait for it), not "never" (settle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from mlshift._exceptions import APINotFoundError, RoutingError
from mlshift.kube._api import KubeAPI, Resource

__all__ = ["reconciled", "wait_propagated"]

log = logging.getLogger("mlshift.kube")


def reconciled(obj: Mapping[str, Any] | None, generation: int) -> bool | None:
    """True once istiod reports ``generation`` pushed; False while it does not; None if
    there is no ``Reconciled`` condition at all (the cluster writes no status).

    Example:
        >>> reconciled({"status": {"conditions": [{"type": "Reconciled", "status": "True",
        ...     "observedGeneration": 3}]}}, 3)
        True
    """
    status = (obj or {}).get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("type") != "Reconciled":
            continue
        observed = cond.get("observedGeneration", status.get("observedGeneration"))
        try:
            current = observed is not None and int(observed) >= generation
        except (TypeError, ValueError):
            current = False
        return bool(current and str(cond.get("status")) == "True")
    return None


def wait_propagated(
    api: KubeAPI,
    res: Resource,
    namespace: str,
    name: str,
    generation: int | None,
    *,
    settle: float,
    timeout: float,
    poll: float,
    writes_status: bool = False,
) -> bool:
    """Return once the write of ``generation`` (None: a delete) has reached the proxies.

    ``writes_status``: this cluster is known to write ``Reconciled`` (seen before), so an
    object without it is waited for, not settled. Returns whether the condition was seen.
    """
    started = time.monotonic()
    if generation is None:
        time.sleep(settle)
        return writes_status
    while True:
        try:
            state = reconciled(api.get(res, namespace, name), generation)
        except APINotFoundError:
            state = None
        waited = time.monotonic() - started
        writes_status = writes_status or state is not None
        if state:
            log.info("%s %s/%s reached the proxies in %.1f s", res.kind, namespace, name, waited)
            return True
        if state is None and not writes_status and waited >= settle:
            # No status written here: the settle time stands in for it.
            log.debug(
                "%s %s/%s has no Reconciled status; settled %.1f s for generation %s",
                res.kind, namespace, name, waited, generation,
            )  # fmt: skip
            return False
        if waited >= max(timeout, settle):
            raise RoutingError(
                f"{res.kind} {namespace}/{name} generation {generation} has not reached every"
                f" proxy after {waited:.0f} s (istiod's Reconciled condition); nothing after it"
                " was changed. Check `istioctl proxy-status`, then run the step again"
            )
        time.sleep(poll)
