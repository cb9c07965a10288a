"""The seam between the facade and a target: what every engine does, and nothing more.

An engine executes plans (``mlshift._plan``) against its world — processes and an Envoy on
this machine, or a Kubernetes cluster — and reads back what is there. The facade never
talks to Envoy or the Kubernetes API itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._bundle import BundleInfo
    from mlshift._plan import Plan
    from mlshift._state import EndpointState, TrafficState, VersionSpec

__all__ = ["Engine", "Target", "VersionStatus"]


@dataclass(frozen=True)
class VersionStatus:
    """What is true of one version right now.

    ``ready`` means it can take traffic; ``reason`` says why not (``process exited (code
    -9)``, ``CrashLoopBackOff: ...``) and is empty when ready.
    """

    version: str
    ready: bool
    weight: int
    reason: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    address: str = ""
    """Where the version's server answers directly (local: http://127.0.0.1:PORT)."""


class Engine(Protocol):
    """What an engine does for one endpoint."""

    target: str
    """``"local"`` or ``"kubernetes"``."""

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        """Return the endpoint's applied state and traffic history, or None if it has none."""
        ...

    def execute(self, plan: Plan) -> None:
        """Run ``plan``'s steps in order and store ``plan.history`` with the routes.

        Raises NotReadyError when a wait-ready step fails (routing untouched), RoutingError
        when the router rejects routes (routing unchanged).
        """
        ...

    def status(self, state: EndpointState) -> dict[str, VersionStatus]:
        """Return the live status of every version of ``state``."""
        ...

    def url(self, state: EndpointState) -> str:
        """Return the address requests to the endpoint go to."""
        ...

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        """Return the per-version metrics frame (mlshift.metrics.FRAME_COLUMNS)."""
        ...

    def prediction_metrics(self, state: EndpointState, *, since: float) -> dict[str, str]:
        """Return each version's Prometheus exposition text (local) or {} (read via PromQL)."""
        ...


class Target(Protocol):
    """Where endpoints live (``mlshift.Local()``, ``mlshift.Kubernetes()``)."""

    name: str

    def engine(self, endpoint: str) -> Engine:
        """Return the engine that serves ``endpoint`` on this target."""
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
