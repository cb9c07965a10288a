"""The mlshift exception tree.

Every error mlshift raises is a ``MlshiftError``; each message says what happened and
what to do next. Library exceptions are wrapped with ``raise ... from exc``. Errors about a
caller's arguments also inherit ``ValueError`` (``TypeError`` for data of the wrong kind), so
``except ValueError`` keeps working. This module imports nothing of mlshift: every layer may
raise its errors.

    MlshiftError
    ├── ConfigError                 bad settings, no cluster / registry / Envoy found
    │   └── LocalModeError          the local mesh cannot run here (no Envoy, busy port)
    ├── InvalidArgumentError        an argument out of range or of the wrong form (also ValueError)
    │   ├── InvalidNameError        not a DNS-1123 label
    │   ├── InvalidWeightsError     weights that are not 0-100 summing to 100
    │   └── InvalidDataError        data of a kind mlshift cannot send (also TypeError)
    ├── UnknownVersionError         a version the endpoint does not have (also LookupError)
    ├── BundleError                 a model cannot be bundled or a bundle cannot be read
    │   └── DigestMismatchError     the model file does not match mlshift.json's sha256
    ├── BuildError                  an image cannot be built or pushed
    │   └── RegistryAuthError       401/403 from a registry
    ├── DeployError                 a version could not be rolled out
    │   └── NotReadyError           it never became ready (with the reason)
    ├── UnsupportedError            the target cannot do that (e.g. revive on Kubernetes)
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
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidNameError",
    "InvalidWeightsError",
    "LocalModeError",
    "MetricsUnavailableError",
    "MlshiftError",
    "NotReadyError",
    "RegistryAuthError",
    "RoutingError",
    "UnknownVersionError",
    "UnsupportedError",
]


class MlshiftError(Exception):
    """Base class of every error mlshift raises; its message says what to do next.

    Example:
        >>> try:
        ...     ep.shift({"v1": 90})  # doctest: +SKIP
        ... except mlshift.MlshiftError as exc:
        ...     print(exc)  # doctest: +SKIP
        weights must sum to 100, got 90 ...
    """


class ConfigError(MlshiftError):
    """Settings are missing or wrong (no cluster, no registry, no Envoy binary...).

    Example:
        >>> mlshift.Kubernetes(namespace="ml").repository("churn")  # doctest: +SKIP
        Traceback (most recent call last):
        ConfigError: no image registry to push model images to; set registry= ...
    """


class LocalModeError(ConfigError):
    """The local mesh cannot run on this machine as configured.

    Example:
        >>> mlshift.endpoint("churn", target=mlshift.Local(port=80))  # doctest: +SKIP
        >>> ep.deploy(model, "v1")  # doctest: +SKIP
        Traceback (most recent call last):
        LocalModeError: port 80 is in use ...
    """


class InvalidArgumentError(MlshiftError, ValueError):
    """An argument is out of range or not of the expected form; the message names the fix.

    Example:
        >>> from mlshift._durations import parse_duration
        >>> parse_duration("-5s", what="since")
        Traceback (most recent call last):
        mlshift._exceptions.InvalidArgumentError: since must not be negative, got '-5s'...
    """


class InvalidNameError(InvalidArgumentError):
    """An endpoint or version name is not a DNS-1123 label.

    Example:
        >>> mlshift.endpoint("Churn_Model")
        Traceback (most recent call last):
        mlshift._exceptions.InvalidNameError: endpoint name 'Churn_Model' is not a DNS-1123 label...
    """


class InvalidDataError(InvalidArgumentError, TypeError):
    """Data of a kind mlshift cannot send to a model server (also a ``TypeError``).

    Example:
        >>> ep.predict([object()])  # doctest: +SKIP
        Traceback (most recent call last):
        InvalidDataError: cannot send object values to a model server; ...
    """


class InvalidWeightsError(InvalidArgumentError):
    """Traffic weights are not integers 0-100 summing to 100 over known, ready versions.

    Example:
        >>> ep.shift({"v1": 90, "v2": 20})  # doctest: +SKIP
        Traceback (most recent call last):
        InvalidWeightsError: weights must sum to 100, got 110 ...
    """


class UnknownVersionError(MlshiftError, LookupError):
    """The endpoint has no version of that name.

    Example:
        >>> ep.promote("v9")  # doctest: +SKIP
        Traceback (most recent call last):
        UnknownVersionError: endpoint 'churn' has no version 'v9'; it has v1, v2
    """

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


class BundleError(MlshiftError):
    """A model cannot be bundled, or a bundle cannot be read.

    Example:
        >>> mlshift.bundle(object(), "v1")  # doctest: +SKIP
        Traceback (most recent call last):
        BundleError: ... has no predict() method ...
    """


class DigestMismatchError(BundleError):
    """The model file's sha256 differs from the one recorded in mlshift.json.

    Example:
        >>> ep.deploy("bundles/churn-v2", "v2")  # a tampered bundle  # doctest: +SKIP
        Traceback (most recent call last):
        DigestMismatchError: ... sha256 ... does not match mlshift.json ...
    """


class BuildError(MlshiftError):
    """A serving image cannot be built or pushed.

    Example:
        >>> mlshift.build_image(model, "v2", repository="localhost:1/churn")  # doctest: +SKIP
        Traceback (most recent call last):
        BuildError: cannot reach the registry at localhost:1 ...
    """


class RegistryAuthError(BuildError):
    """The registry refused the credentials (401/403).

    Example:
        >>> mlshift.build_image(model, "v2", repository="reg.example.com/ml/c")  # doctest: +SKIP
        Traceback (most recent call last):
        RegistryAuthError: reg.example.com answered 401 ...; run docker login ...
    """


class DeployError(MlshiftError):
    """A version could not be rolled out.

    Example:
        >>> try:
        ...     ep.deploy(model, "v2")  # doctest: +SKIP
        ... except mlshift.DeployError as exc:
        ...     print(exc)  # doctest: +SKIP
    """


class NotReadyError(DeployError):
    """A version did not become ready; ``reason`` says why (CrashLoopBackOff, ...).

    Example:
        >>> try:
        ...     ep.deploy(model, "v2")  # doctest: +SKIP
        ... except mlshift.NotReadyError as exc:
        ...     exc.reason  # doctest: +SKIP
        'ImagePullBackOff'
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedError(MlshiftError):
    """The target cannot do this (``revive`` on Kubernetes, whose Deployments restart pods).

    Example:
        >>> mlshift.endpoint("churn", target=mlshift.Kubernetes()).revive()  # doctest: +SKIP
        Traceback (most recent call last):
        UnsupportedError: the kubernetes target restarts versions by itself; check ep.status()
    """


class RoutingError(MlshiftError):
    """The router refused or could not take a traffic change; routing is unchanged.

    Example:
        >>> try:
        ...     ep.shift({"v1": 50, "v2": 50})  # doctest: +SKIP
        ... except mlshift.RoutingError as exc:
        ...     print(exc)  # doctest: +SKIP
    """


class ConflictError(RoutingError):
    """The routes kept changing under us (another notebook); re-read and try again.

    The verbs already retry with backoff for a couple of seconds before raising it.

    Example:
        >>> ep.shift({"v1": 50, "v2": 50})  # doctest: +SKIP
        Traceback (most recent call last):
        ConflictError: ... (gave up after 9 attempts in 2 s: someone else keeps changing ...)
    """


class APIError(MlshiftError):
    """A Kubernetes API call failed; fields come from the Status payload.

    Example:
        >>> try:
        ...     ep.status()  # doctest: +SKIP
        ... except mlshift.APIError as exc:
        ...     exc.code, exc.message  # doctest: +SKIP
        (403, 'deployments.apps is forbidden: ...')
    """

    def __init__(self, message: str, *, code: int = 0, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class APINotFoundError(APIError):
    """The object does not exist (404).

    Example:
        >>> isinstance(mlshift.APINotFoundError("gone", code=404), mlshift.APIError)
        True
    """


class APIConflictError(APIError):
    """The object changed since it was read (409).

    Example:
        >>> mlshift.APIConflictError("modified", code=409).code
        409
    """


class MetricsUnavailableError(MlshiftError):
    """The metrics source (Prometheus, Envoy stats) cannot be reached or answered garbage.

    Example:
        >>> mlshift.metrics.query("http://127.0.0.1:1", "up")  # doctest: +SKIP
        Traceback (most recent call last):
        MetricsUnavailableError: cannot reach Prometheus at http://127.0.0.1:1 ...
    """
