"""The seam between the facade and a target: what every engine does, and nothing more.

An engine executes plans (``mlshift._plan``) against its world — processes and an Envoy on
this machine, or a Kubernetes cluster — and reads back what is there. The facade never
talks to Envoy or the Kubernetes API itself, and never asks an engine what it can do by
probing for attributes: ``Engine`` is the whole contract. Every engine implements every
method; what only some targets can do is declared in ``capabilities`` (an engine without
``"revive"`` raises ``UnsupportedError`` from ``revive``, saying why).
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._bundle_info import BundleInfo
    from mlshift._histogram import LatencyHistogram
    from mlshift._plan import Plan
    from mlshift._prediction_stats import PredictionStats
    from mlshift._state import EndpointState, Routing, TrafficState, VersionSpec

__all__ = ["Capability", "Engine", "Target", "VersionStatus"]

Capability = Literal["revive", "fast-load"]
"""Optional abilities of an engine: ``"revive"`` restarts versions whose process died;
``"fast-load"``: ``load`` reads local files only (no network), so the facade's reading
properties (``ep.weights``, ``ep.versions``, the repr) re-read the live state every time."""


@dataclass(frozen=True)
class VersionStatus:
    """What is true of one version right now (a row of ``ep.status()``).

    ``ready`` means it can take traffic; ``reason`` says why not (``process exited (code
    -9)``, ``CrashLoopBackOff: ...``) and is empty when ready.

    Example:
        >>> VersionStatus("v2", ready=False, weight=0, reason="process exited (code 2)").ready
        False
    """

    version: str
    ready: bool
    weight: int
    reason: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    address: str = ""
    """Where the version's server answers directly (local: http://127.0.0.1:PORT)."""
    warning: str = ""
    """Why traffic to it may not follow the weights (no sidecar, another VirtualService
    claiming the host), even though it is ready; empty when nothing is wrong."""


class Engine(Protocol):
    """What an engine does for one endpoint."""

    target: str
    """``"local"`` or ``"kubernetes"``."""

    capabilities: frozenset[Capability]
    """The optional abilities this engine has (see ``Capability``)."""

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Return the endpoint's applied state and traffic history, or None if it has none."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the endpoint's write lock from a verb's read to its write, where the target
        has one (the local mesh: a file lock); elsewhere a no-op, and a change made meanwhile
        is caught at write time (``ConflictError``)."""
        ...

    def execute(self, plan: Plan) -> None:
        """Run ``plan``'s steps in order and store ``plan.history`` with the routes.

        Raises NotReadyError when a wait-ready step fails (routing untouched), RoutingError
        when the router rejects routes (routing unchanged).
        """
        ...

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        """Return the live status of every version of ``state`` (or only of ``versions``)."""
        ...

    def url(self, state: EndpointState) -> str:
        """Return the address requests to the endpoint go to."""
        ...

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        """Return the per-version metrics frame (mlshift.metrics.FRAME_COLUMNS)."""
        ...

    def checkpoint(self, state: EndpointState) -> float:
        """Start a measurement window now: return the epoch time from which ``metrics`` and
        ``latency_histograms`` count only what the router answers after this call (locally a
        read of Envoy's counters taken now, which are otherwise read every second)."""
        ...

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        """Return each version's prediction counters over the last ``since`` seconds."""
        ...

    def latency_histograms(
        self, state: EndpointState, *, since: float
    ) -> dict[str, LatencyHistogram]:
        """Return each version's latency histogram (ms) over the last ``since`` seconds, from
        the router's buckets (local: Envoy's ``upstream_rq_time``; Kubernetes: Istio's
        ``istio_request_duration_milliseconds`` in Prometheus); versions without
        observations are left out."""
        ...

    def journal(self, state: EndpointState, version: str, *, since: float) -> list[dict[str, Any]]:
        """Return ``version``'s recorded inference requests since ``since`` (epoch seconds).

        Each entry is model_server's journal entry (``id``, ``time``, ``status``,
        ``latency_ms``, ``digest``, ``prediction``), oldest first, from every replica; read
        straight from the version's processes (local) or through the API server's pod proxy
        (Kubernetes). Raises ``APIError``/``MlshiftError`` when a replica cannot be read.
        """
        ...

    def revive(self, state: EndpointState) -> list[str]:
        """Restart what is not running and return the versions restarted.

        Raises UnsupportedError where ``"revive"`` is not in ``capabilities``.
        """
        ...


class Target(Protocol):
    """Where endpoints live (``mlshift.Local()``, ``mlshift.Kubernetes()``)."""

    name: str
    """``"local"``, ``"kubernetes"``: what reprs and messages call the target."""

    hosts: tuple[str, ...]
    """Extra host names a new endpoint's routes answer to (an ingress host), or none."""

    gateways: tuple[str, ...]
    """Gateways a new endpoint's routes bind to; empty means the mesh only."""

    def engine(self, endpoint: str) -> Engine:
        """Return the engine that serves ``endpoint`` on this target."""
        ...

    def routing_for(self, endpoint: str) -> Routing:
        """Return the routing a new ``endpoint`` gets (``"istio"`` or ``"gateway-api"``)."""
        ...

    def namespace(self) -> str:
        """Return the namespace objects are rendered into."""
        ...

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        """Turn a bundle into what this target serves (a local bundle dir, or a pushed image).

        In a dry run nothing is built or pushed; the spec names what would be.
        """
        ...
