"""mlshift: ship model versions to production traffic from a notebook.

    >>> import mlshift
    >>> ep = mlshift.endpoint("churn")               # local mesh by default
    >>> ep.deploy(model_v1, "v1", sample=X[:5])      # first version takes 100 %
    >>> ep.deploy(model_v2, "v2")                    # new version at 0 %
    >>> ep.shift({"v1": 90, "v2": 10})               # patches the VirtualService weights
    >>> ep.metrics(since="5m")                       # per-version DataFrame

Heavy pieces (Envoy, kubernetes, matplotlib, ipywidgets) load on first use, so importing
mlshift stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlshift._api import current, deploy, endpoint
from mlshift._endpoint import Endpoint, Version
from mlshift._exceptions import (
    APIConflictError,
    APIError,
    APINotFoundError,
    BuildError,
    BundleError,
    ConfigError,
    ConflictError,
    DeployError,
    DigestMismatchError,
    InvalidNameError,
    InvalidWeightsError,
    LocalModeError,
    MetricsUnavailableError,
    MlshiftError,
    NotReadyError,
    RegistryAuthError,
    RoutingError,
    UnknownVersionError,
)

if TYPE_CHECKING:
    from mlshift._bundle import BundleInfo, bundle
    from mlshift.image import build_image
    from mlshift.kube import Kubernetes, rbac
    from mlshift.local import Local

__version__ = "0.1.0"

__all__ = [
    "APIConflictError",
    "APIError",
    "APINotFoundError",
    "BuildError",
    "BundleError",
    "BundleInfo",
    "ConfigError",
    "ConflictError",
    "DeployError",
    "DigestMismatchError",
    "Endpoint",
    "InvalidNameError",
    "InvalidWeightsError",
    "Kubernetes",
    "Local",
    "LocalModeError",
    "MetricsUnavailableError",
    "MlshiftError",
    "NotReadyError",
    "RegistryAuthError",
    "RoutingError",
    "UnknownVersionError",
    "Version",
    "build_image",
    "bundle",
    "current",
    "deploy",
    "endpoint",
    "rbac",
]

# Names loaded on first use, so `import mlshift` does not pay for Envoy, kubernetes or skops.
_LAZY = {
    "BundleInfo": "mlshift._bundle",
    "bundle": "mlshift._bundle",
    "build_image": "mlshift.image",
    "Kubernetes": "mlshift.kube",
    "rbac": "mlshift.kube",
    "Local": "mlshift.local",
}


# Submodules reachable as attributes (``mlshift.metrics.query(...)``, ``mlshift.plot``).
_SUBMODULES = ("image", "kube", "local", "metrics", "plot")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"mlshift.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlshift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])
