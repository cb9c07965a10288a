"""The mlshift exception tree.

Every error mlshift raises is a ``MlshiftError``; each message says what happened and
what to do next. Library exceptions are wrapped with ``raise ... from exc``.

    MlshiftError
    ├── ConfigError                 bad settings, no cluster / registry / Envoy found
    │   └── LocalModeError          the local mesh cannot run here (no Envoy, busy port)
    ├── InvalidNameError            not a DNS-1123 label          (also ValueError)
    ├── InvalidWeightsError         weights that are not 0-100 summing to 100 (also ValueError)
    ├── UnknownVersionError         a version the endpoint does not have (also LookupError)
    ├── BundleError                 a model cannot be bundled or a bundle cannot be read
    │   └── DigestMismatchError     the model file does not match mlshift.json's sha256
    ├── BuildError                  an image cannot be built or pushed
    │   └── RegistryAuthError       401/403 from a registry
    ├── DeployError                 a version could not be rolled out
    │   └── NotReadyError           it never became ready (with the reason)
    ├── RoutingError                the router refused or could not take a traffic change
    │   └── ConflictError           someone else kept changing the VirtualService
    ├── APIError                    a Kubernetes API call failed (.code, .message, .details)
    │   ├── APINotFoundError
    │   └── APIConflictError
    └── MetricsUnavailableError     Prometheus / Envoy stats cannot be reached
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConflictError",
    "APIError",
    "APINotFoundError",
    "BuildError",
    "BundleError",
    "ConfigError",
    "ConflictError",
    "DeployError",
    "DigestMismatchError",
    "InvalidNameError",
    "InvalidWeightsError",
    "LocalModeError",
    "MetricsUnavailableError",
    "MlshiftError",
    "NotReadyError",
    "RegistryAuthError",
    "RoutingError",
    "UnknownVersionError",
]


class MlshiftError(Exception):
    """Base class of every error mlshift raises."""


class ConfigError(MlshiftError):
    """Settings are missing or wrong (no cluster, no registry, no Envoy binary...)."""


class LocalModeError(ConfigError):
    """The local mesh cannot run on this machine as configured."""


class InvalidNameError(MlshiftError, ValueError):
    """An endpoint or version name is not a DNS-1123 label."""


class InvalidWeightsError(MlshiftError, ValueError):
    """Traffic weights are not integers 0-100 summing to 100 over known, ready versions."""


class UnknownVersionError(MlshiftError, LookupError):
    """The endpoint has no version of that name."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


class BundleError(MlshiftError):
    """A model cannot be bundled, or a bundle cannot be read."""


class DigestMismatchError(BundleError):
    """The model file's sha256 differs from the one recorded in mlshift.json."""


class BuildError(MlshiftError):
    """A serving image cannot be built or pushed."""


class RegistryAuthError(BuildError):
    """The registry refused the credentials (401/403)."""


class DeployError(MlshiftError):
    """A version could not be rolled out."""


class NotReadyError(DeployError):
    """A version did not become ready; ``reason`` says why (CrashLoopBackOff, ...)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class RoutingError(MlshiftError):
    """The router refused or could not take a traffic change; routing is unchanged."""


class ConflictError(RoutingError):
    """The VirtualService kept changing under us; re-read and try again."""


class APIError(MlshiftError):
    """A Kubernetes API call failed; fields come from the Status payload."""

    def __init__(self, message: str, *, code: int = 0, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class APINotFoundError(APIError):
    """The object does not exist (404)."""


class APIConflictError(APIError):
    """The object changed since it was read (409)."""


class MetricsUnavailableError(MlshiftError):
    """The metrics source (Prometheus, Envoy stats) cannot be reached or answered garbage."""
