"""The least-privilege Role the Kubernetes target needs, verb by verb, and its binding.

Each rule names what the engine calls it for, so a cluster admin can review the list; an
integration test runs every flow against the emulator and checks that the verbs it sent are
exactly these, for each routing:

=======================  =========================  ========================================
resource                 verbs                      why
=======================  =========================  ========================================
deployments (apps)       get list create patch      one per version; poll its rollout; find
                         delete                     the endpoint's versions
replicasets (apps)       list                       which pods belong to the newest rollout
pods, events             list                       say why a version is not ready
pods/proxy               get                        read each replica's request journal (ep.compare)
services                 get create patch delete    the endpoint's Service, if mlshift's (Gateway
                         (Gateway API: + list)      API: and one per version, listed to find them)
destinationrules         get create patch delete    one subset per version (Istio only)
virtualservices          get list create patch      the weights, never ``update`` (PUT); list:
                         delete                     another one claiming the endpoint's host
                                                    (Istio only)
httproutes               get create patch delete    the weights (Gateway API only)
=======================  =========================  ========================================

``routing="auto"`` needs both sets, plus ``list httproutes`` and ``get services`` to decide
(an HTTPRoute already routing the endpoint; a waypoint on its Service). Telling an ambient
namespace apart needs ``get namespaces``, which is cluster-wide and so not in this Role: grant
it with a ClusterRole, or pass ``routing=`` explicitly.

Only when used (``rbac(..., replicas=True)`` etc.):

=========================  =====================  ==========================================
resource                   verbs                  why
=========================  =====================  ==========================================
poddisruptionbudgets       create patch delete    a version with ``replicas`` > 1 or
(policy)                                          ``autoscale``
horizontalpodautoscalers   create patch delete    a version deployed with ``autoscale=``
(autoscaling)
podmonitors                create patch delete    ``Kubernetes(pod_monitor=True)``
(monitoring.coreos.com)
=========================  =====================  ==========================================

The same Role (``routing="auto"``) ships as ``mlshift/data/rbac.yaml`` (namespace
``default``; a test keeps the two in step).
"""

from __future__ import annotations

from typing import Any

from mlshift._exceptions import InvalidArgumentError
from mlshift._names import check_name

__all__ = ["manifest_yaml", "rbac"]

_COMMON: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "create", "patch", "delete"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
]
_ROUTE_VERBS = ["get", "create", "patch", "delete"]
_ISTIO_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["destinationrules"],
        "verbs": _ROUTE_VERBS,
    },
    {
        # list: another VirtualService claiming the endpoint's host makes weights do nothing
        "apiGroups": ["networking.istio.io"],
        "resources": ["virtualservices"],
        "verbs": ["get", "list", "create", "patch", "delete"],
    },
]
_GATEWAY = {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"]}
RULES: dict[str, list[dict[str, Any]]] = {
    "istio": [
        *_COMMON,
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["get", "create", "patch", "delete"],
        },
        *_ISTIO_RULES,
    ],
    "gateway-api": [
        *_COMMON,
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        },
        {**_GATEWAY, "verbs": _ROUTE_VERBS},
    ],
    "auto": [
        *_COMMON,
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        },
        *_ISTIO_RULES,
        {**_GATEWAY, "verbs": ["get", "list", "create", "patch", "delete"]},
    ],
}
"""The Role's rules for each routing (``mlshift.Kubernetes(routing=...)``)."""


WRITE = ["create", "patch", "delete"]
REPLICA_RULE = {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE}
AUTOSCALE_RULE = {
    "apiGroups": ["autoscaling"],
    "resources": ["horizontalpodautoscalers"],
    "verbs": WRITE,
}
POD_MONITOR_RULE = {
    "apiGroups": ["monitoring.coreos.com"],
    "resources": ["podmonitors"],
    "verbs": WRITE,
}


def rbac(
    namespace: str,
    *,
    name: str = "mlshift",
    service_account: str | None = None,
    routing: str = "auto",
    replicas: bool = False,
    autoscale: bool = False,
    pod_monitor: bool = False,
) -> list[dict[str, Any]]:
    """Return a Role with the verbs the SDK uses in ``namespace`` and a RoleBinding for it.

    ``routing`` is the target's (``"istio"``, ``"gateway-api"`` or ``"auto"``): the Role
    grants exactly what that routing uses.

    The RoleBinding grants the Role to the ServiceAccount ``service_account`` (default:
    ``name``) of the same namespace; edit its ``subjects`` to bind a user or group instead.
    ``replicas=True`` adds PodDisruptionBudgets (versions with more than one pod),
    ``autoscale=True`` HorizontalPodAutoscalers too, ``pod_monitor=True`` the Prometheus
    Operator's PodMonitors (``Kubernetes(pod_monitor=True)``).

    Example:
        >>> role, binding = rbac("ml")
        >>> role["kind"], binding["roleRef"]["name"]
        ('Role', 'mlshift')
        >>> [r["resources"][0] for r in rbac("ml", autoscale=True)[0]["rules"][-2:]]
        ['poddisruptionbudgets', 'horizontalpodautoscalers']
    """
    check_name(namespace, kind="namespace")
    check_name(name, kind="Role name")
    if routing not in RULES:
        raise InvalidArgumentError(
            f"routing must be 'auto', 'istio' or 'gateway-api', got {routing!r}"
        )
    rules = list(RULES[routing])
    if replicas or autoscale:  # an autoscaled version may run several pods
        rules.append(REPLICA_RULE)
    if autoscale:
        rules.append(AUTOSCALE_RULE)
    if pod_monitor:
        rules.append(POD_MONITOR_RULE)
    labels = {"app.kubernetes.io/managed-by": "mlshift"}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": [{key: list(values) for key, values in rule.items()} for rule in rules],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account or name, "namespace": namespace}
        ],
    }
    return [role, binding]


def manifest_yaml(
    namespace: str = "default", *, name: str = "mlshift", routing: str = "auto"
) -> str:
    """Return ``rbac(namespace)`` as multi-document YAML, ready for ``kubectl apply -f -``.

    Example:
        >>> print(manifest_yaml("ml").splitlines()[1])
        kind: Role
    """
    from mlshift._render import to_yaml

    return to_yaml(rbac(namespace, name=name, routing=routing))
