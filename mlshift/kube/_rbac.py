"""The least-privilege Role the Kubernetes target needs, verb by verb, and its binding.

Each rule names what the engine calls it for, so a cluster admin can review the list; an
integration test runs every flow against the emulator and checks that the verbs it sent are
exactly these:

=======================  =========================  ========================================
resource                 verbs                      why
=======================  =========================  ========================================
deployments (apps)       get list create patch      one per version; poll its rollout; find
                         delete                     the endpoint's versions
replicasets (apps)       list                       which pods belong to the newest rollout
pods, events             list                       say why a version is not ready
services                 get create patch delete    the endpoint's Service, if mlshift's
destinationrules         get create patch delete    one subset per version (Istio)
virtualservices          get create patch delete    the weights; never ``update`` (PUT)
=======================  =========================  ========================================

The same Role ships as ``mlshift/data/rbac.yaml`` (namespace ``default``; a test keeps the
two in step). Nothing cluster-wide is needed.
"""

from __future__ import annotations

from typing import Any

from mlshift._names import check_name

__all__ = ["manifest_yaml", "rbac"]

RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "create", "patch", "delete"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch", "delete"]},
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["destinationrules", "virtualservices"],
        "verbs": ["get", "create", "patch", "delete"],
    },
]


def rbac(
    namespace: str,
    *,
    name: str = "mlshift",
    service_account: str | None = None,
) -> list[dict[str, Any]]:
    """Return a Role with the verbs the SDK uses in ``namespace`` and a RoleBinding for it.

    The RoleBinding grants the Role to the ServiceAccount ``service_account`` (default:
    ``name``) of the same namespace; edit its ``subjects`` to bind a user or group instead.

    Example:
        >>> role, binding = rbac("ml")
        >>> role["kind"], binding["roleRef"]["name"]
        ('Role', 'mlshift')
    """
    check_name(namespace, kind="namespace")
    check_name(name, kind="Role name")
    labels = {"app.kubernetes.io/managed-by": "mlshift"}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": [{key: list(values) for key, values in rule.items()} for rule in RULES],
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


def manifest_yaml(namespace: str = "default", *, name: str = "mlshift") -> str:
    """Return ``rbac(namespace)`` as multi-document YAML, ready for ``kubectl apply -f -``.

    Example:
        >>> print(manifest_yaml("ml").splitlines()[1])
        kind: Role
    """
    from mlshift._render import to_yaml

    return to_yaml(rbac(namespace, name=name))
