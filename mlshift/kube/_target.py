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
``scrape_interval``        ``MLSHIFT_SCRAPE_INTERVAL``                   ``"15s"``
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
from typing import TYPE_CHECKING, Any

from mlshift._durations import parse_duration
from mlshift._exceptions import APIError, ConfigError, InvalidArgumentError
from mlshift._state import ROUTINGS, PodOptions, Resources, Routing, VersionSpec
from mlshift._workload import PLACEHOLDER_DIGEST
from mlshift.kube._api import KubeAPI
from mlshift.kube._config import SERVICE_ACCOUNT_DIR, ClusterConfig, KubeconfigArg, discover
from mlshift.kube._engine import EngineSettings, KubernetesEngine
from mlshift.kube._gateway import Detection, detect

if TYPE_CHECKING:
    from mlshift._bundle_info import BundleInfo

__all__ = ["DEFAULT_PROMETHEUS_URL", "DEFAULT_ROLLOUT_TIMEOUT", "Kubernetes"]

log = logging.getLogger("mlshift.kube")

DEFAULT_PROMETHEUS_URL = "http://prometheus.istio-system:9090"
DEFAULT_ROLLOUT_TIMEOUT = "5m"
DEFAULT_SCRAPE_INTERVAL = "15s"  # Istio's Prometheus addon; kube-prometheus-stack: 30s
DEFAULT_SETTLE_TIME = "3s"


def _flag(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _resources(value: Resources | Mapping[str, Any] | None) -> Resources:
    return Resources().updated(value)


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
            fields, ``gpus`` for ``nvidia.com/gpu``); ``ep.deploy(..., resources=...)``
            changes them for one version.
        insecure_registry: allow plain HTTP to the registry (default: only for loopback).
        prometheus_token: a bearer token for Prometheus (default
            ``$MLSHIFT_PROMETHEUS_TOKEN``).
        prometheus_headers: extra HTTP headers for Prometheus, e.g. a tenant header
            ``{"X-Scope-OrgID": "ml"}`` or a proxy's auth.
        progress: show progress bars for pushes and rollouts.
        poll_interval: seconds between rollout checks.
        service_account_dir: where the in-cluster service account files are.
        gateways: Istio gateways the VirtualService binds to, e.g.
            ``["istio-system/ingressgateway"]`` (default: the mesh only); ``"mesh"`` is
            always added, so in-cluster callers stay routed.
        hosts: extra VirtualService hosts, e.g. the external host name of the gateway.
        routing: ``"istio"`` (VirtualService + DestinationRule), ``"gateway-api"`` (an
            HTTPRoute and one Service per version) or ``"auto"`` (default): the Gateway API
            when the cluster serves HTTPRoutes and the namespace is ambient
            (``istio.io/dataplane-mode=ambient``) or already routes the endpoint with an
            HTTPRoute, else Istio. An existing endpoint keeps the routing it has.
        ambient: whether the namespace runs Istio's ambient mode (metrics then come from the
            waypoint); default: read from the namespace's label under ``routing="auto"``.
        startup: how long a version's model may take to load before the kubelet restarts
            its pod (a startup probe), e.g. ``"10m"`` for a large model; default ``"2m"``.
        drain: how long a stopping pod keeps serving before it drains (a ``preStop`` wait
            while endpoints and sidecars forget it); default ``"5s"``, ``0`` for none.
        service_account: the ServiceAccount the model pods run as (its token is mounted);
            default none and no token.
        image_pull_secrets: names of Secrets with the registry's credentials.
        node_selector: node labels the pods must run on.
        tolerations: Kubernetes tolerations for tainted (e.g. GPU) nodes, as dicts.
        sidecar: label the pods for Istio's sidecar injection (default); ``False`` in an
            ambient namespace. ``ep.status()`` warns when a pod runs without a proxy.
        scrape_interval: how often Prometheus scrapes the pods (Istio's addon ``"15s"``,
            kube-prometheus-stack ``"30s"``); metrics' ``rate()`` windows span at least four
            scrapes, so a slower scrape never gives empty numbers.
        pod_monitor: also write a Prometheus Operator ``PodMonitor`` per version (the
            Operator ignores ``prometheus.io/*`` annotations), scraping at
            ``scrape_interval``.
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
        resources: Resources | Mapping[str, Any] | None = None,
        insecure_registry: bool | None = None,
        prometheus_token: str | None = None,
        prometheus_headers: Mapping[str, str] | None = None,
        progress: bool = True,
        poll_interval: float = 1.0,
        service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
        gateways: Sequence[str] = (),
        hosts: Sequence[str] = (),
        routing: str = "auto",
        ambient: bool | None = None,
        startup: str | float = "2m",
        drain: str | float = "5s",
        service_account: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        node_selector: Mapping[str, str] | None = None,
        tolerations: Sequence[Mapping[str, Any]] = (),
        sidecar: bool = True,
        scrape_interval: str | float | None = None,
        pod_monitor: bool = False,
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
        if routing not in ("auto", *ROUTINGS):
            raise InvalidArgumentError(
                f"routing must be 'auto', 'istio' or 'gateway-api', got {routing!r}"
            )
        self.routing = routing
        self.ambient = ambient
        self._detections: dict[str, Detection] = {}
        self._warned: set[str] = set()
        if scrape_interval is None:
            scrape_interval = env.get("MLSHIFT_SCRAPE_INTERVAL") or DEFAULT_SCRAPE_INTERVAL
        self.scrape_interval = parse_duration(scrape_interval, what="scrape_interval")
        if self.scrape_interval <= 0:
            raise ConfigError(f"scrape_interval must be positive, got {scrape_interval!r}")
        self.pod_monitor = pod_monitor
        self.pod = PodOptions(
            startup_s=parse_duration(startup, what="startup"),
            drain_s=parse_duration(drain, what="drain"),
            service_account=service_account,
            image_pull_secrets=tuple(image_pull_secrets),
            node_selector=dict(node_selector or {}),
            tolerations=tuple(dict(t) for t in tolerations),
            sidecar=sidecar,
            pod_monitor=pod_monitor,
            # Only a PodMonitor carries it; otherwise the engine sizes windows from it.
            scrape_interval_s=self.scrape_interval if pod_monitor else PodOptions.scrape_interval_s,
        )
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
            ("routing", None if self.routing == "auto" else self.routing),
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

    def detect_routing(self, endpoint: str) -> Detection:
        """Decide the routing of a new ``endpoint`` (asks the cluster once under ``"auto"``).

        Without a reachable cluster (a dry run on a laptop) ``"auto"`` means Istio. In ambient
        mode with no waypoint a warning says how to add one (``mlshift.waypoint``).

        Example:
            >>> Kubernetes(routing="gateway-api").detect_routing("churn").routing
            'gateway-api'
        """
        if self.routing != "auto":
            return Detection(self.routing, "chosen with routing=", bool(self.ambient))  # type: ignore[arg-type]
        found = self._detect(endpoint)
        if found.warning and endpoint not in self._warned:
            self._warned.add(endpoint)
            log.warning("%s: %s", endpoint, found.warning)
        return found

    def _detect(self, endpoint: str) -> Detection:
        """Ask the cluster once per endpoint (see ``mlshift.kube._gateway.detect``)."""
        if endpoint not in self._detections:
            try:
                found = detect(self.api, self.namespace(), endpoint)
            except (ConfigError, APIError) as exc:
                found = Detection("istio", f"no cluster to ask ({type(exc).__name__})")
            if self.ambient is not None:
                found = dataclasses.replace(found, ambient=self.ambient)
            log.info("%s would be routed by %s: %s", endpoint, found.routing, found.reason)
            self._detections[endpoint] = found
        return self._detections[endpoint]

    def routing_for(self, endpoint: str) -> Routing:
        """The routing a new ``endpoint`` gets (see ``detect_routing``)."""
        return self.detect_routing(endpoint).routing

    def _ambient(self, endpoint: str) -> bool:
        """Whether metrics come from a waypoint: ``ambient=``, else the namespace's label."""
        if self.ambient is not None:
            return self.ambient
        return self._detect(endpoint).ambient

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
            routing=self.routing,
            ambient=lambda: self._ambient(endpoint),
            scrape_interval=self.scrape_interval,
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

        Nothing is built in a dry run, so there is no digest: the image is the tag with the
        placeholder digest ``sha256:<resolved-at-deploy>``, which no kubelet pulls, and the
        rendered Deployment says so in an annotation.

        Example:
            >>> spec = target.prepare_version(info, "churn", "v2", dry_run=True)  # doctest: +SKIP
            >>> spec.image  # doctest: +SKIP
            'registry.example.com/ml/churn:churn-v2@sha256:<resolved-at-deploy>'
        """
        from mlshift.image import build_image, image_tag

        repository = self.repository(endpoint)
        if dry_run:
            image = f"{image_tag(repository, endpoint, version)}@{PLACEHOLDER_DIGEST}"
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
            name=version,
            model_sha256=bundle.sha256,
            image=image,
            resources=self.resources,
            trust_pickle=bundle.trusts_pickle,
            pod=self.pod,
        )
