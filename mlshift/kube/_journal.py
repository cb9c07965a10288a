"""Each replica's request journal, read through the API server's pod proxy (no port-forward).

``GET /api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/v2/models/{model}/journal?since=…``
needs ``get`` on ``pods/proxy`` (in ``mlshift.rbac()``). The API server dials the pod's IP
and passes its answer back, so a failure is either the API server's own ``Status``
(403 without the permission, 503 "error trying to reach service" when the pod's port does
not answer) or the pod's answer passed through (a model_server without the journal: 404).
Each says which pod and what to do; a replica is never left out silently, since a journal
missing one replica's requests would bias ``ep.compare`` and the canary's latencies.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from mlshift._exceptions import APIError, APINotFoundError
from mlshift._state import EndpointState
from mlshift._workload import CONTAINER_PORT
from mlshift.kube._api import PODS, KubeAPI, status_payload, wrap_api_exception
from mlshift.kube._config import import_kubernetes
from mlshift.kube._live import dig

__all__ = ["read_journal", "wrap_proxy_exception"]

log = logging.getLogger("mlshift.kube")

_ISTIO_STRICT = (
    " If the namespace enforces Istio mTLS (PeerAuthentication STRICT), the sidecar refuses"
    " the API server's plain HTTP: make port {port} PERMISSIVE there (portLevelMtls)."
)


def wrap_proxy_exception(
    exc: Exception, what: str, server: str, *, namespace: str, pod: str, port: int
) -> APIError:
    """An ``APIError`` for a failed pod proxy call that says whose answer it was and the fix.

    Example:
        >>> wrap_proxy_exception(OSError("refused"), "read", "", namespace="ml", pod="p",
        ...                      port=8080).code
        0
    """
    api_exception = import_kubernetes("kubernetes.client.exceptions").ApiException
    if not isinstance(exc, api_exception):
        return wrap_api_exception(exc, what, server)
    code = int(exc.status or 0)
    payload = status_payload(exc.body)
    details = payload.get("details")
    look = f"`kubectl -n {namespace} get pod {pod}`"
    if payload.get("kind") == "Status":  # the API server's own answer, not the pod's
        reason = str(payload.get("reason") or exc.reason or "")
        message = str(payload.get("message") or reason)
        text = f"{what} failed: {code} {reason}: {message}"
        if code == 404 and reason == "NotFound":
            return APINotFoundError(f"{text} (the pod is gone)", code=code, details=details)
        if code in (401, 403):
            fix = (
                "; reading a pod's journal needs `get` on `pods/proxy`: apply the Role from"
                f" mlshift.rbac({namespace!r}) (it has that rule) and bind it to your user or"
                " service account"
            )
        else:
            fix = (
                f"; the API server cannot reach port {port} of pod {namespace}/{pod}: check"
                f" that the pod runs and is ready ({look}).{_ISTIO_STRICT.format(port=port)}"
            )
        return APIError(text + fix, code=code, details=details)
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
    said = str(payload.get("error") or body or exc.reason or "").strip()[:300]
    text = f"{what} failed: pod {namespace}/{pod} answered {code}: {said}"
    if code == 404:
        text += (
            "; its model_server has no request journal at this path (an image built before"
            " mlshift journalled requests, or another model's): rebuild the version's image"
            " with this mlshift and deploy it again"
        )
    else:
        text += f"; see the pod's log (`kubectl -n {namespace} logs {pod}`)"
    return APIError(text, code=code, details=details)


def read_journal(
    api: KubeAPI, state: EndpointState, version: str, *, since: float
) -> list[dict[str, Any]]:
    """Every running replica's journal entries since ``since`` (epoch s), oldest first.

    A replica that cannot be read raises ``APIError`` naming the pod and the fix; a pod
    deleted between the listing and the read is left out (its requests went with it).

    Example:
        >>> read_journal(api, state, "v2", since=time.time() - 600)  # doctest: +SKIP
        [{'id': '5f0c…', 'time': 1733.2, 'status': 200, 'latency_ms': 3.1, ...}]
    """
    labels = {"app": state.name, "version": version}
    entries: list[dict[str, Any]] = []
    for pod in api.list_objects(PODS, state.namespace, labels):
        if dig(pod, "status", "phase") != "Running":
            continue
        name = str(dig(pod, "metadata", "name"))
        try:
            doc = api.proxy_get(
                state.namespace,
                name,
                CONTAINER_PORT,
                f"v2/models/{state.name}/journal",
                {"since": repr(since)},
                what=f"read the request journal of pod {state.namespace}/{name} ({version})",
                wrap=functools.partial(
                    wrap_proxy_exception, namespace=state.namespace, pod=name, port=CONTAINER_PORT
                ),
            )
        except APINotFoundError:
            log.info("pod %s/%s went away before its journal was read", state.namespace, name)
            continue
        entries.extend(e for e in doc.get("entries") or () if isinstance(e, dict))
    return sorted(entries, key=lambda e: float(e.get("time", 0.0)))
