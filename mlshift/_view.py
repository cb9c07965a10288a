"""What a face needs of an endpoint: the protocol the slider, the plots and the canary take.

Faces (``mlshift._widgets``, ``mlshift.plot``, ``mlshift._canary``, the command line) sit
above the facade and call it; the facade reaches them only through one-line lazy shims
(``ep.slider()``, ``ep.plot()``, ``ep.canary()``). So a face never imports ``Endpoint``: it
takes an ``EndpointView``, which ``Endpoint`` satisfies and a test double can too. Living
low in the house, this module imports only core types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._compare import Comparison
    from mlshift._display import Version
    from mlshift._engine import Target
    from mlshift._histogram import LatencyHistogram

__all__ = ["EndpointView"]


class EndpointView(Protocol):
    """An endpoint as a face sees it: its name and split, its health, and the traffic verbs.

    Every change goes through these verbs, the same ones a person calls; faces never talk
    to an engine. Example (any ``mlshift.Endpoint`` is one):

        >>> def share(ep: EndpointView, version: str) -> int:
        ...     return ep.weights.get(version, 0)
    """

    @property
    def name(self) -> str:
        """The endpoint's name."""
        ...

    @property
    def target(self) -> Target:
        """Where it lives (``target.name`` is ``"local"`` or ``"kubernetes"``)."""
        ...

    @property
    def weights(self) -> dict[str, int]:
        """The traffic weights as last read."""
        ...

    @property
    def versions(self) -> Mapping[str, Version]:
        """The versions as last read, by name, in deployment order."""
        ...

    def status(self) -> pd.DataFrame:
        """Ask the target how every version is doing (and refresh the cached state)."""
        ...

    def history(self) -> list[dict[str, int]]:
        """Past traffic weights, oldest first."""
        ...

    def shift(self, weights: Mapping[str, int] | str, percent: int | None = None) -> object:
        """Change the split: ``shift({"v1": 90, "v2": 10})`` or ``shift("v2", 50)``."""
        ...

    def promote(self, version: str) -> object:
        """Send all traffic to ``version``."""
        ...

    def rollback(self) -> object:
        """Return to the split before the last change."""
        ...

    def metrics(self, since: str | float = "5m", step: str | float = "10s") -> pd.DataFrame:
        """Per-version request rate, errors and latency (the metrics frame)."""
        ...

    def checkpoint(self) -> float:
        """Start a measurement window now (epoch seconds); ``metrics`` counts from it exactly."""
        ...

    def latency_histograms(self, since: str | float = "5m") -> dict[str, LatencyHistogram]:
        """Each version's latency histogram over the last ``since`` (the router's buckets)."""
        ...

    def predictions(self, since: str | float = "15m", *, stable: str | None = None) -> pd.DataFrame:
        """What each version predicts, and how far it diverges from ``stable``."""
        ...

    def compare(self, a: str, b: str, since: str | float = "10m") -> Comparison:
        """Pair two versions' answers to the same requests (shadow traffic)."""
        ...

    def journal(self, version: str, since: str | float = "10m") -> pd.DataFrame:
        """The requests ``version`` answered recently (ids, latencies, predictions)."""
        ...

    def reader(self) -> EndpointView:
        """A second handle on the same endpoint, for a background thread to read through."""
        ...
