"""Module-level verbs for one-line notebook use: ``mlshift.endpoint()``, ``mlshift.deploy()``.

``mlshift.endpoint(name)`` returns an ``Endpoint`` and makes it the current one, so later
``mlshift.deploy(model, "v2")`` calls go to it (like ``httpx.get`` next to ``httpx.Client``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from mlshift._endpoint import Endpoint
from mlshift._exceptions import MlshiftError

if TYPE_CHECKING:
    from mlshift._display import Version
    from mlshift._engine import Target
    from mlshift._plan import Plan
    from mlshift._state import Resources

__all__ = ["current", "deploy", "endpoint"]

_lock = threading.Lock()
_registry: dict[str, Endpoint] = {}


def endpoint(name: str, target: Target | None = None) -> Endpoint:
    """Return the endpoint ``name`` on ``target`` (default: the local mesh) and make it current.

    Example:
        >>> ep = mlshift.endpoint("churn")  # doctest: +SKIP
        >>> k8s = mlshift.Kubernetes(namespace="ml")  # doctest: +SKIP
        >>> ep = mlshift.endpoint("churn", target=k8s)  # doctest: +SKIP
    """
    ep = Endpoint(name, target)
    with _lock:
        _registry["current"] = ep
    return ep


def current() -> Endpoint:
    """Return the endpoint the last ``mlshift.endpoint()`` call made current.

    Example:
        >>> mlshift.endpoint("churn")  # doctest: +SKIP
        >>> mlshift.current().name  # doctest: +SKIP
        'churn'
    """
    with _lock:
        ep = _registry.get("current")
    if ep is None:
        raise MlshiftError(
            "no current endpoint; call mlshift.endpoint('name') first"
            " (e.g. ep = mlshift.endpoint('churn'))"
        )
    return ep


@overload
def deploy(
    model: Any,
    version: str,
    *,
    sample: Any = ...,
    replicas: int = ...,
    trust_pickle: bool = ...,
    resources: Resources | Mapping[str, Any] | None = ...,
    autoscale: tuple[int, int, int] | None = ...,
    startup: str | float | None = ...,
    dry_run: Literal[False] = ...,
) -> Version: ...
@overload
def deploy(
    model: Any,
    version: str,
    *,
    sample: Any = ...,
    replicas: int = ...,
    trust_pickle: bool = ...,
    resources: Resources | Mapping[str, Any] | None = ...,
    autoscale: tuple[int, int, int] | None = ...,
    startup: str | float | None = ...,
    dry_run: Literal[True],
) -> Plan: ...
@overload
def deploy(
    model: Any,
    version: str,
    *,
    sample: Any = ...,
    replicas: int = ...,
    trust_pickle: bool = ...,
    resources: Resources | Mapping[str, Any] | None = ...,
    autoscale: tuple[int, int, int] | None = ...,
    startup: str | float | None = ...,
    dry_run: bool,
) -> Version | Plan: ...
def deploy(
    model: Any,
    version: str,
    *,
    sample: Any = None,
    replicas: int = 1,
    trust_pickle: bool = False,
    resources: Resources | Mapping[str, Any] | None = None,
    autoscale: tuple[int, int, int] | None = None,
    startup: str | float | None = None,
    dry_run: bool = False,
) -> Version | Plan:
    """Deploy ``model`` as ``version`` on the current endpoint (see ``Endpoint.deploy``).

    Example:
        >>> mlshift.endpoint("churn")  # doctest: +SKIP
        >>> mlshift.deploy(model_v2, "v2")  # doctest: +SKIP
        >>> mlshift.deploy(my_own_model, "v3", trust_pickle=True)  # doctest: +SKIP
    """
    return current().deploy(
        model,
        version,
        sample=sample,
        replicas=replicas,
        trust_pickle=trust_pickle,
        resources=resources,
        autoscale=autoscale,
        startup=startup,
        dry_run=dry_run,
    )
