"""The few Kubernetes API calls the engine makes, with errors turned into mlshift's own.

Every call goes through the official ``kubernetes`` client's ``ApiClient`` (its auth, TLS and
proxy handling) but on plain dicts: mlshift renders objects as dicts, so there is no point in
round-tripping them through the generated models, and Istio's resources have none anyway.

Writes are ``POST`` (create) and ``PATCH`` with ``application/merge-patch+json``, never
``PUT``, each with ``fieldManager=mlshift`` so ``kubectl``/GitOps tools can see who owns what.
Failures become ``APIError`` (``APINotFoundError`` for a 404 ``Status`` naming the object,
never for the plain-text 404 of a path the server does not serve; ``APIConflictError`` for 409)
carrying ``code``, ``message`` and ``details`` from the Kubernetes ``Status`` payload; an API
server that cannot be reached is an ``APIError`` with code 0 naming its URL. Reads (GET and
LIST) answered with 429 or 5xx are tried again with backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from mlshift._exceptions import APIConflictError, APIError, APINotFoundError
from mlshift.kube._config import import_kubernetes

__all__ = [
    "AUTOSCALERS",
    "DEPLOYMENTS",
    "DESTINATION_RULES",
    "DISRUPTION_BUDGETS",
    "EVENTS",
    "FIELD_MANAGER",
    "HTTP_ROUTES",
    "PODS",
    "POD_MONITORS",
    "REPLICA_SETS",
    "RESOURCES",
    "SERVICES",
    "VIRTUAL_SERVICES",
    "KubeAPI",
    "Resource",
    "status_payload",
    "wrap_api_exception",
]

log = logging.getLogger("mlshift.kube")

FIELD_MANAGER = "mlshift"
READ_ATTEMPTS = 5
"""GET/LIST tries when the API server answers 429 (throttled) or 5xx."""
MAX_RETRY_AFTER_S = 10.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: where its objects live in the API."""

    group: str
    version: str
    plural: str
    kind: str

    def path(self, namespace: str, name: str | None = None) -> str:
        """Return the URL path of the collection, or of one object when ``name`` is given.

        Example:
            >>> DEPLOYMENTS.path("ml", "churn-v1")
            '/apis/apps/v1/namespaces/ml/deployments/churn-v1'
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{path}/{quote(name, safe='')}" if name else path


DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
DESTINATION_RULES = Resource("networking.istio.io", "v1", "destinationrules", "DestinationRule")
VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
# A version's companions (mlshift._workload), written only when it has more than one pod.
DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
POD_MONITORS = Resource("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor")
RESOURCES = {
    r.kind: r
    for r in (
        HTTP_ROUTES,
        DEPLOYMENTS,
        REPLICA_SETS,
        SERVICES,
        PODS,
        EVENTS,
        DESTINATION_RULES,
        VIRTUAL_SERVICES,
        DISRUPTION_BUDGETS,
        AUTOSCALERS,
        POD_MONITORS,
    )
}


def status_payload(body: object) -> dict[str, Any]:
    """An error body as a dict (a ``Status``, or any JSON object); ``{}`` when not JSON."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def wrap_api_exception(exc: Exception, what: str, server: str = "") -> APIError:
    """Turn the client's ``ApiException`` (or a urllib3 error) into an ``APIError``.

    ``what`` names the call for the message (``"create Deployment ml/churn-v1"``). The
    ``Status`` payload's ``message`` and ``details`` become the error's fields.
    """
    api_exception = import_kubernetes("kubernetes.client.exceptions").ApiException
    if not isinstance(exc, api_exception):
        where = f" at {server}" if server else ""
        return APIError(
            f"cannot reach the Kubernetes API{where} to {what} ({type(exc).__name__}: {exc});"
            " check that `kubectl get pods` works with the same context, or pass"
            " context=/kubeconfig= to mlshift.Kubernetes()",
            code=0,
        )
    code = int(exc.status or 0)
    payload = status_payload(exc.body)
    reason = str(payload.get("reason") or exc.reason or "")
    message = str(payload.get("message") or reason or "no message")
    details = payload.get("details")
    text = f"{what} failed: {code} {reason}: {message}".replace(": :", ":")
    if code == 404:
        if payload.get("kind") == "Status" and reason == "NotFound":
            return APINotFoundError(f"{text} (it does not exist)", code=code, details=details)
        # A plain-text "404 page not found": the path itself is not served (an API group or
        # version the cluster does not have), which says nothing about the object.
        return APIError(
            f"{what} failed: 404 {message.strip()}: the API server does not serve this API"
            " group/version; is the CRD (e.g. Istio's) installed?",
            code=code,
            details=details,
        )
    if code == 409:
        return APIConflictError(
            f"{text} (it changed since it was read; read it again and retry)",
            code=code,
            details=details,
        )
    if code in (401, 403):
        text += (
            "; the credentials lack permission: apply the Role from mlshift.rbac(namespace)"
            " and bind it to your user or service account"
        )
    elif code == 0:
        text += f"; is the API server{(' ' + server) if server else ''} reachable?"
    else:
        text += "; see the message above, fix the object or the cluster, and try again"
    return APIError(text, code=code, details=details)


def _retry_pause(exc: Any, attempt: int) -> float | None:
    """Seconds to wait before reading again after a 429 or 5xx (None: do not retry).

    ``Retry-After`` (seconds) is honoured up to ``MAX_RETRY_AFTER_S``; without it the waits
    grow 0.2, 0.4, 0.8 ... s. Only reads are retried: a write may have been applied.
    """
    status = int(getattr(exc, "status", 0) or 0)
    if status != 429 and not 500 <= status <= 599:
        return None
    headers = getattr(exc, "headers", None) or {}
    try:
        after = float(headers.get("Retry-After") or "")
    except (TypeError, ValueError):
        after = -1.0
    if after >= 0:
        return float(min(after, MAX_RETRY_AFTER_S))
    return float(min(0.2 * 2 ** (attempt - 1), MAX_RETRY_AFTER_S))


def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    """Return ``obj["a"]["b"]`` for ``"a.b"`` (label keys may hold dots: longest match wins)."""
    value: Any = obj
    parts = dotted.split(".")
    while parts:
        if not isinstance(value, Mapping):
            return None
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in value:
                value, parts = value[key], parts[n:]
                break
        else:
            return None
    return value


class KubeAPI:
    """Namespaced get/list/create/patch/delete on plain dicts, through the official client.

    The ``ApiClient`` is made by ``client_factory`` on the first call, so building a
    ``KubeAPI`` touches neither the network nor a kubeconfig.

    Example:
        >>> api = KubeAPI(lambda: new_client(), server="https://10.0.0.1")  # doctest: +SKIP
        >>> api.get(DEPLOYMENTS, "ml", "churn-v1")["spec"]["replicas"]  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        server: str = "",
        request_timeout: float = 30.0,
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._served: dict[str, tuple[str, ...]] = {}
        self.server = server
        self.request_timeout = request_timeout

    @property
    def client(self) -> Any:
        """The ``kubernetes.client.ApiClient`` (created on first use)."""
        if self._client is None:
            self._client = self._factory()
            host = getattr(getattr(self._client, "configuration", None), "host", "")
            self.server = self.server or str(host or "")
        return self._client

    def close(self) -> None:
        """Release the client's connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
        wrap: Callable[[Exception, str, str], APIError] = wrap_api_exception,
    ) -> dict[str, Any]:
        api_exception = import_kubernetes("kubernetes.client.exceptions").ApiException
        http_error = import_kubernetes("urllib3.exceptions").HTTPError
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                data = self._send(method, path, query, body, content_type)
            except api_exception as exc:
                pause = _retry_pause(exc, attempt) if method == "GET" else None
                if pause is None or attempt == READ_ATTEMPTS:
                    raise wrap(exc, what, self.server) from exc
                log.info("%s: %s from the API server; again in %.1f s", what, exc.status, pause)
                time.sleep(pause)
            except (http_error, OSError) as exc:
                raise wrap(exc, what, self.server) from exc
            else:
                return data if isinstance(data, dict) else {}
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: object,
        content_type: str,
    ) -> Any:
        """One request through the client's REST layer, the same on every supported client.

        ``ApiClient.param_serialize``/``response_deserialize`` exist only in newer clients
        and ``call_api``/``update_params_for_auth`` changed their signatures with them, so
        this uses what all of them share: ``configuration.host`` and ``auth_settings()``,
        ``default_headers`` and ``rest_client.request``. Older clients read the
        body and raise ``ApiException`` themselves; newer ones return the response unread.
        """
        api_exception = import_kubernetes("kubernetes.client.exceptions").ApiException
        client = self.client
        headers: dict[str, str] = {"Accept": "application/json", **client.default_headers}
        if client.cookie:
            headers["Cookie"] = client.cookie
        if body is not None:
            headers["Content-Type"] = content_type
        params = list((query or {}).items())
        # The bearer token (refreshed by the kubeconfig's exec/auth-provider hook when set);
        # client certificates live in the REST client's TLS settings.
        for setting in (client.configuration.auth_settings() or {}).values():
            if setting.get("value") and setting.get("in") == "header":
                headers[str(setting["key"])] = str(setting["value"])
        url = client.configuration.host + path + (f"?{urlencode(params)}" if params else "")
        response = client.rest_client.request(
            method,
            url,
            headers=headers,
            body=body,
            _request_timeout=(self.request_timeout, self.request_timeout),
        )
        if callable(getattr(response, "read", None)):
            response.read()  # newer clients leave the body unread
        if not 200 <= int(response.status) <= 299:
            raise api_exception(http_resp=response)
        text = response.data
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return json.loads(text) if text else {}

    def served_versions(self, group: str) -> tuple[str, ...]:
        """The versions of API ``group`` the server serves (``()`` if none); asked once.

        Example:
            >>> api.served_versions("networking.istio.io")  # doctest: +SKIP
            ('v1', 'v1beta1', 'v1alpha3')
        """
        if group not in self._served:
            try:
                data = self._call("GET", f"/apis/{quote(group, safe='')}", f"discover {group}")
            except APINotFoundError:
                data = {}
            except APIError as exc:
                if exc.code != 404:
                    raise
                data = {}  # the plain-text 404 of a group the cluster does not have
            versions = data.get("versions") or ()
            self._served[group] = tuple(
                str(v["version"]) for v in versions if isinstance(v, dict) and v.get("version")
            )
        return self._served[group]

    def get_path(self, path: str, what: str) -> dict[str, Any]:
        """GET any API path (discovery, a cluster-scoped object); errors as for ``get``."""
        return self._call("GET", path, what)

    def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        """Return one object; ``APINotFoundError`` when it does not exist."""
        return self._call("GET", res.path(namespace, name), f"get {res.kind} {namespace}/{name}")

    def list_objects(
        self,
        res: Resource,
        namespace: str,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Return the objects of ``res`` in ``namespace`` carrying all of ``labels``.

        ``fields`` are field selectors with dotted paths (``{"involvedObject.name": "x"}``).
        Both selectors are sent to the server and applied again here, so the answer is right
        even from a server that ignores selectors.
        """
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in fields.items())
        what = f"list {res.plural} in {namespace}"
        data = self._call("GET", res.path(namespace), what, query=query)
        items = [i for i in data.get("items") or () if isinstance(i, dict)]
        return [
            i
            for i in items
            if all(_dig(i, "metadata.labels." + k) == v for k, v in (labels or {}).items())
            and all(_dig(i, k) == v for k, v in (fields or {}).items())
        ]

    def proxy_get(
        self,
        namespace: str,
        pod: str,
        port: int,
        path: str,
        query: Mapping[str, str],
        *,
        what: str = "",
        wrap: Callable[[Exception, str, str], APIError] = wrap_api_exception,
    ) -> dict[str, Any]:
        """GET ``path`` of a pod's ``port`` through the API server's pod proxy (a JSON answer).

        Needs ``get`` on ``pods/proxy``; no port-forward. ``wrap`` turns a failure into the
        ``APIError`` raised; an answer that is not JSON is an ``APIError`` too.
        """
        what = what or f"read {path} of pod {namespace}/{pod}"
        try:
            return self._call(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}",
                what,
                query=query,
                wrap=wrap,
            )
        except ValueError as exc:  # the pod's 2xx answer, not JSON
            raise APIError(
                f"{what} failed: pod {namespace}/{pod} answered on port {port} with something"
                f" that is not JSON ({exc}); is model_server what listens there?",
                code=200,
            ) from exc

    def create(self, res: Resource, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``; ``APIConflictError`` when it already exists."""
        name = (obj.get("metadata") or {}).get("name", "?")
        return self._call(
            "POST",
            res.path(namespace),
            f"create {res.kind} {namespace}/{name}",
            query={"fieldManager": FIELD_MANAGER},
            body=dict(obj),
        )

    def patch(
        self, res: Resource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386): dicts merge, lists and scalars are replaced.

        A ``metadata.resourceVersion`` in the patch makes the server refuse it with 409 when
        the object changed since it was read.
        """
        return self._call(
            "PATCH",
            res.path(namespace, name),
            f"patch {res.kind} {namespace}/{name}",
            query={"fieldManager": FIELD_MANAGER},
            body=dict(patch),
            content_type=MERGE_PATCH,
        )

    def delete(self, res: Resource, namespace: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False if it was not there."""
        try:
            self._call(
                "DELETE",
                res.path(namespace, name),
                f"delete {res.kind} {namespace}/{name}",
                query={"propagationPolicy": "Background"},
            )
        except APINotFoundError:
            return False
        return True
