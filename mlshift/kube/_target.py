"""``mlshift.Kubernetes``: the cluster target's settings, and the engine it hands out.

Constructing one reads nothing and touches no network, so dry runs (``deploy(...,
dry_run=True)``, ``render()``) work on a laptop with no cluster. The cluster is discovered
the kubectl way on first use (``mlshift.kube._config``); images are built and pushed by
``mlshift.image.build_image`` to ``<registry>/<endpoint>``.

Settings left out come from the environment:

=========================  ============================================  =======================
argument                   environment variable                          default
=========================  ============================================  =======================
``namespace``              ``MLSHIFT_NAMESPACE``                         the context's, else
                                                                         ``default``
``registry``               ``MLSHIFT_REGISTRY``                          none (needed to deploy)
``prometheus_url``         ``MLSHIFT_PROMETHEUS_URL``                    Istio's addon
``url``                    ``MLSHIFT_URL``                               the in-cluster Service
``base_image``             ``MLSHIFT_BASE_IMAGE``                        mlshift's serving base
``prometheus_token``       ``MLSHIFT_PROMETHEUS_TOKEN``                  none
``prometheus_headers``     (none)                                        none
``rollout_timeout``        ``MLSHIFT_ROLLOUT_TIMEOUT``                   ``"5m"``
``insecure_registry``      ``MLSHIFT_INSECURE_REGISTRY`` (``1``/``0``)   loopback only
``settle_time``            ``MLSHIFT_SETTLE_TIME``                       ``"3s"``
=========================  ============================================  =======================

An argument given explicitly always wins over its environment variable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlshift._durations import parse_duration
from mlshift._exceptions import ConfigError
from mlshift._state import Resources, VersionSpec
from mlshift.kube._api import KubeAPI
from mlshift.kube._config import SERVICE_ACCOUNT_DIR, ClusterConfig, KubeconfigArg, discover
from mlshift.kube._engine import EngineSettings, KubernetesEngine

if TYPE_CHECKING:
    from mlshift._bundle_info import BundleInfo

__all__ = ["DEFAULT_PROMETHEUS_URL", "DEFAULT_ROLLOUT_TIMEOUT", "Kubernetes"]

log = logging.getLogger("mlshift.kube")

DEFAULT_PROMETHEUS_URL = "http://prometheus.istio-system:9090"
DEFAULT_ROLLOUT_TIMEOUT = "5m"
DEFAULT_SETTLE_TIME = "3s"


def _flag(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _resources(value: Resources | Mapping[str, str] | None) -> Resources:
    if value is None or isinstance(value, Resources):
        return value or Resources()
    known = {f.name for f in dataclasses.fields(Resources)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"unknown resources key(s) {', '.join(unknown)}; use {', '.join(sorted(known))},"
            " e.g. resources={'cpu_request': '500m', 'memory_limit': '2Gi'}"
        )
    return Resources(**{k: str(v) for k, v in value.items()})


class Kubernetes:
    """A Kubernetes cluster with Istio, reached with the official ``kubernetes`` client.

    Args:
        namespace: where the endpoint's objects go (default: ``$MLSHIFT_NAMESPACE``, the
            context's namespace, the service account's, or ``default``).
        context: the kubeconfig context (default: the current one).
        kubeconfig: a kubeconfig path or several (default: ``$KUBECONFIG``, then
            ``~/.kube/config``, then the in-cluster service account).
        registry: where images are pushed, e.g. ``"registry.example.com/ml"``; each endpoint
            gets the repository ``<registry>/<endpoint>``.
        prometheus_url: the Prometheus holding Istio's metrics.
        url: the ingress gateway address requests go to (``{endpoint}`` and ``{namespace}``
            are filled in); default the in-cluster ``http://<endpoint>.<ns>.svc.cluster.local``.
        base_image: the serving base image the model is layered onto.
        rollout_timeout: how long a version may take to become ready (``"90s"``, seconds);
            default ``$MLSHIFT_ROLLOUT_TIMEOUT``, else ``"5m"``.
        resources: default requests/limits for every version (``Resources`` or a dict of its
            fields).
        insecure_registry: allow plain HTTP to the registry (default: only for loopback).
        prometheus_token: a bearer token for Prometheus (default
            ``$MLSHIFT_PROMETHEUS_TOKEN``).
        prometheus_headers: extra HTTP headers for Prometheus, e.g. a tenant header
            ``{"X-Scope-OrgID": "ml"}`` or a proxy's auth.
        progress: show progress bars for pushes and rollouts.
        poll_interval: seconds between rollout checks.
        service_account_dir: where the in-cluster service account files are.
        gateways: Istio gateways the VirtualService binds to, e.g.
            ``["istio-system/ingressgateway"]`` (default: the mesh only). Add ``"mesh"`` too
            to keep in-cluster callers routed.
        hosts: extra VirtualService hosts, e.g. the external host name of the gateway.
        settle_time: how long a routing change is given to reach the sidecars before a step
            that depends on it (``remove`` after ``promote``), where istiod writes no
            ``Reconciled`` status (``PILOT_ENABLE_STATUS``); where it does, mlshift waits
            for that instead. Default ``$MLSHIFT_SETTLE_TIME``, else ``"3s"``.

    Example:
        >>> import mlshift
        >>> target = mlshift.Kubernetes(namespace="ml", registry="registry.example.com/ml")
        >>> ep = mlshift.endpoint("churn", target=target)  # doctest: +SKIP
        >>> ep.deploy(model, "v1")  # doctest: +SKIP
    """

    name = "kubernetes"

    def __init__(  # noqa: PLR0917 (the issue's signature: six positional settings)
        self,
        namespace: str | None = None,
        context: str | None = None,
        kubeconfig: KubeconfigArg = None,
        registry: str | None = None,
        prometheus_url: str | None = None,
        url: str | None = None,
        *,
        base_image: str | None = None,
        rollout_timeout: str | float | None = None,
        resources: Resources | Mapping[str, str] | None = None,
        insecure_registry: bool | None = None,
        prometheus_token: str | None = None,
        prometheus_headers: Mapping[str, str] | None = None,
        progress: bool = True,
        poll_interval: float = 1.0,
        service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
        gateways: Sequence[str] = (),
        hosts: Sequence[str] = (),
        settle_time: str | float | None = None,
    ) -> None:
        env = os.environ
        self._namespace = namespace or env.get("MLSHIFT_NAMESPACE") or None
        self.context = context
        self.kubeconfig = kubeconfig
        self.registry = (registry or env.get("MLSHIFT_REGISTRY") or "").strip().rstrip("/")
        self.prometheus_url = (
            prometheus_url or env.get("MLSHIFT_PROMETHEUS_URL") or DEFAULT_PROMETHEUS_URL
        )
        self.url = url or env.get("MLSHIFT_URL") or None
        self.base_image = base_image or env.get("MLSHIFT_BASE_IMAGE") or None
        if rollout_timeout is None:
            rollout_timeout = env.get("MLSHIFT_ROLLOUT_TIMEOUT") or DEFAULT_ROLLOUT_TIMEOUT
        self.rollout_timeout = parse_duration(rollout_timeout, what="rollout_timeout")
        self.resources = _resources(resources)
        self.insecure_registry = (
            insecure_registry
            if insecure_registry is not None
            else _flag(env.get("MLSHIFT_INSECURE_REGISTRY"))
        )
        self.prometheus_token = prometheus_token or env.get("MLSHIFT_PROMETHEUS_TOKEN") or None
        self.prometheus_headers = dict(prometheus_headers) if prometheus_headers else None
        self.progress = progress
        self.poll_interval = float(poll_interval)
        self.service_account_dir = Path(service_account_dir)
        self.gateways = tuple(gateways)
        self.hosts = tuple(hosts)
        if settle_time is None:
            settle_time = env.get("MLSHIFT_SETTLE_TIME") or DEFAULT_SETTLE_TIME
        self.settle_time = parse_duration(settle_time, what="settle_time")
        self._cluster: ClusterConfig | None = None
        self._api: KubeAPI | None = None

    def __repr__(self) -> str:
        pairs = (
            ("namespace", self._namespace),
            ("context", self.context),
            ("registry", self.registry),
        )
        parts = [f"{key}={value}" for key, value in pairs if value]
        return f"<Kubernetes {' '.join(parts)}>" if parts else "<Kubernetes>"

    def cluster(self) -> ClusterConfig:
        """Discover the cluster (local files only; cached). Raises ``ConfigError`` if none."""
        if self._cluster is None:
            self._cluster = discover(
                kubeconfig=self.kubeconfig,
                context=self.context,
                namespace=self._namespace,
                service_account_dir=self.service_account_dir,
            )
            log.info("using %s, namespace %s", self._cluster.describe(), self._cluster.namespace)
        return self._cluster

    def namespace(self) -> str:
        """The namespace objects are rendered into (``default`` when no cluster is found)."""
        if self._namespace:
            return self._namespace
        try:
            return self.cluster().namespace
        except ConfigError as exc:
            log.debug("no cluster to take the namespace from (%s); using 'default'", exc)
            return "default"

    @property
    def api(self) -> KubeAPI:
        """The API client shared by this target's engines (connects on first call)."""
        if self._api is None:
            self._api = KubeAPI(lambda: self.cluster().api_client())
        return self._api

    def engine(self, endpoint: str) -> KubernetesEngine:
        """Return the engine for ``endpoint``; nothing is contacted until it is used."""
        settings = EngineSettings(
            namespace=self.namespace(),
            rollout_timeout=self.rollout_timeout,
            poll_interval=self.poll_interval,
            progress=self.progress,
            url=self.url,
            prometheus_url=self.prometheus_url,
            prometheus_token=self.prometheus_token,
            prometheus_headers=self.prometheus_headers,
            settle_time=self.settle_time,
        )
        return KubernetesEngine(endpoint, self.api, settings)

    def repository(self, endpoint: str) -> str:
        """The image repository of ``endpoint``: ``<registry>/<endpoint>``."""
        if not self.registry:
            raise ConfigError(
                "no image registry to push model images to; set registry= on"
                " mlshift.Kubernetes(...) or MLSHIFT_REGISTRY (e.g. registry.example.com/ml)"
            )
        return f"{self.registry}/{endpoint}"

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        """Build and push the version's image; in a dry run only name the tag it would push.

        Example:
            >>> spec = target.prepare_version(info, "churn", "v2", dry_run=True)  # doctest: +SKIP
            >>> spec.image  # doctest: +SKIP
            'registry.example.com/ml/churn:churn-v2'
        """
        from mlshift.image import build_image, image_tag

        repository = self.repository(endpoint)
        if dry_run:
            image = image_tag(repository, endpoint, version)
        else:
            image = build_image(
                bundle,
                version,
                repository=repository,
                endpoint=endpoint,
                base=self.base_image,
                insecure=self.insecure_registry,
                progress=self.progress,
            )
        return VersionSpec(
            name=version, model_sha256=bundle.sha256, image=image, resources=self.resources
        )
