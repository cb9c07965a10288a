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

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from mlshift._api import current, deploy, endpoint
from mlshift._display import Version
from mlshift._endpoint import Endpoint
from mlshift._engine import VersionStatus
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
    InvalidArgumentError,
    InvalidDataError,
    InvalidNameError,
    InvalidWeightsError,
    LocalModeError,
    MetricsUnavailableError,
    MlshiftError,
    NotReadyError,
    RegistryAuthError,
    RoutingError,
    UnknownVersionError,
    UnsupportedError,
)
from mlshift._plan import Plan

if _TYPE_CHECKING:
    from mlshift import gates, image, kube, local, metrics, plot
    from mlshift._bundle import bundle
    from mlshift._bundle_info import BundleInfo
    from mlshift._canary import CanaryResult, CanaryRun
    from mlshift._canary_plan import canary_plan
    from mlshift._client import TrafficRun
    from mlshift._compare import Comparison
    from mlshift.image import build_image
    from mlshift.kube import Kubernetes, rbac, waypoint
    from mlshift.local import Local

__version__ = "0.1.0"

__all__ = [
    "APIConflictError",
    "APIError",
    "APINotFoundError",
    "BuildError",
    "BundleError",
    "BundleInfo",
    "CanaryResult",
    "CanaryRun",
    "Comparison",
    "ConfigError",
    "ConflictError",
    "DeployError",
    "DigestMismatchError",
    "Endpoint",
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidNameError",
    "InvalidWeightsError",
    "Kubernetes",
    "Local",
    "LocalModeError",
    "MetricsUnavailableError",
    "MlshiftError",
    "NotReadyError",
    "Plan",
    "RegistryAuthError",
    "RoutingError",
    "TrafficRun",
    "UnknownVersionError",
    "UnsupportedError",
    "Version",
    "VersionStatus",
    "build_image",
    "bundle",
    "canary_plan",
    "current",
    "deploy",
    "endpoint",
    "gates",
    "image",
    "kube",
    "local",
    "metrics",
    "plot",
    "rbac",
    "waypoint",
]

# Names loaded on first use, so `import mlshift` does not pay for Envoy, kubernetes or skops.
_LAZY = {
    "BundleInfo": "mlshift._bundle_info",
    "CanaryResult": "mlshift._canary",
    "CanaryRun": "mlshift._canary",
    "Comparison": "mlshift._compare",
    "canary_plan": "mlshift._canary_plan",
    "TrafficRun": "mlshift._client",
    "bundle": "mlshift._bundle",
    "build_image": "mlshift.image",
    "Kubernetes": "mlshift.kube",
    "rbac": "mlshift.kube",
    "waypoint": "mlshift.kube",
    "Local": "mlshift.local",
}


# Submodules reachable as attributes (``mlshift.metrics.query(...)``, ``mlshift.plot``).
_SUBMODULES = ("gates", "image", "kube", "local", "metrics", "plot")


def __getattr__(name: str) -> _Any:
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
    # The public names are exactly __all__, whatever submodules happen to be imported.
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
