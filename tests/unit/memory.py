"""An in-memory engine and target: a real, tiny implementation of the engine seam.

The facade is tested over it the way httpx tests plug a transport in; the real engines are
tested against Envoy and the Kubernetes emulator in tests/integration/. mypy checks this
module (pyproject's ``files``), so the fakes keep satisfying the whole ``Engine`` and
``Target`` protocols: ``_conforms`` below fails the type check the day they drift.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd

from mlshift._bundle_info import BundleInfo
from mlshift._engine import Capability, Engine, Target, VersionStatus
from mlshift._exceptions import ConflictError, UnsupportedError
from mlshift._frame import empty_frame
from mlshift._histogram import LatencyHistogram
from mlshift._plan import Plan
from mlshift._prediction_stats import PredictionStats
from mlshift._render import managed_routes
from mlshift._state import EndpointState, Routing, TrafficState, VersionSpec


class MemoryEngine:
    """Keeps the applied state in memory; versions in ``down`` report not ready."""

    target = "memory"
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self) -> None:
        self.state: EndpointState | None = None
        self.history: tuple[TrafficState, ...] = ()
        self.plans: list[Plan] = []
        self.down: set[str] = set()
        self.journals: dict[str, list[dict[str, Any]]] = {}  # what journal() answers
        self.histograms: dict[str, LatencyHistogram] = {}  # what latency_histograms() answers
        # Runs once, just before the next execute: "another notebook" acting meanwhile.
        self.meanwhile: Callable[[], None] | None = None

    def load(self, name: str) -> tuple[EndpointState, tuple[TrafficState, ...]] | None:
        return None if self.state is None else (self.state, self.history)

    def transaction(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def execute(self, plan: Plan) -> None:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        for step in plan.steps:
            previous = (step.obj or {}).get("previous")
            live = managed_routes(self.state) if self.state else None
            if step.action == "patch-routes" and previous is not None and previous != live:
                raise ConflictError("the routes changed since they were read")
        self.plans.append(plan)
        deleting = any(s.action == "delete" and s.kind == "VirtualService" for s in plan.steps)
        self.state, self.history = (None, ()) if deleting else (plan.state, plan.history)

    def status(
        self, state: EndpointState, versions: Collection[str] | None = None
    ) -> dict[str, VersionStatus]:
        return {
            v: VersionStatus(v, v not in self.down, int(state.traffic.weights.get(v, 0)))
            for v in state.version_names
            if versions is None or v in versions
        }

    def url(self, state: EndpointState) -> str:
        return "http://127.0.0.1:1"

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        return empty_frame()

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        return []

    def checkpoint(self, state: EndpointState) -> float:
        return time.time()

    def latency_histograms(
        self, state: EndpointState, *, since: float
    ) -> dict[str, LatencyHistogram]:
        return dict(self.histograms)

    def journal(self, state: EndpointState, version: str, *, since: float) -> list[dict[str, Any]]:
        return [e for e in self.journals.get(version, []) if e["time"] >= since]

    def revive(self, state: EndpointState) -> list[str]:
        raise UnsupportedError("the memory target has no processes to revive")


class MemoryTarget:
    """Hands out one ``MemoryEngine`` per endpoint; images are named, never built."""

    name = "memory"
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()

    def routing_for(self, endpoint: str) -> Routing:
        return "istio"

    def __init__(self) -> None:
        self.engines: dict[str, MemoryEngine] = {}

    def engine(self, endpoint: str) -> MemoryEngine:
        return self.engines.setdefault(endpoint, MemoryEngine())

    def namespace(self) -> str:
        return "ml"

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        return VersionSpec(version, model_sha256=bundle.sha256, image=f"reg/{endpoint}:{version}")


def _conforms(engine: MemoryEngine, target: MemoryTarget) -> tuple[Engine, Target]:
    """A type check, never called: the fakes are a complete ``Engine`` and ``Target``."""
    return engine, target
