"""The facade: ``Endpoint``, the object a notebook holds.

``Endpoint`` is three small layers, each in its own module: ``EndpointReader`` (the cache
and the verbs that read: ``mlshift._reader``), ``TrafficVerbs`` (the verbs that move
traffic: ``mlshift._traffic``) and, here, the verbs that add and remove versions
(``deploy``, ``remove``, ``revive``, ``delete``) and the one-line lazy shims to the faces
(``slider``, ``canary``), so this module imports no face. Every verb reads what the target
has, builds the new desired state, plans the ordered writes and hands them to the engine;
it returns the new state so a notebook cell shows it, or the ``Plan`` with ``dry_run=True``.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from mlshift._durations import parse_duration
from mlshift._exceptions import (
    APIError,
    ConfigError,
    InvalidArgumentError,
    InvalidWeightsError,
    MlshiftError,
    UnsupportedError,
)
from mlshift._names import check_name, next_name
from mlshift._plan import Plan, plan_delete
from mlshift._reader import Seen
from mlshift._state import EndpointState, Resources
from mlshift._traffic import TrafficVerbs, retry_on_conflict

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlshift._bundle_info import BundleInfo
    from mlshift._canary import CanaryRun
    from mlshift._display import Version
    from mlshift._gates import Gate

__all__ = ["Endpoint"]

log = logging.getLogger("mlshift")


def _autoscale(value: tuple[int, int, int] | None, replicas: int) -> tuple[int, int, int] | None:
    """Check ``autoscale=(min, max, target CPU %)``; it replaces ``replicas``."""
    if value is None:
        return None
    try:
        low, high, cpu = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"autoscale must be (min, max, target_cpu_percent), got {value!r}; e.g. (2, 8, 70)"
        ) from exc
    if not 1 <= low <= high or cpu < 1:
        raise InvalidArgumentError(
            f"autoscale needs 1 <= min <= max and a target CPU % of 1 or more, got {value!r};"
            " e.g. (2, 8, 70)"
        )
    if replicas != 1:
        raise InvalidArgumentError(
            f"pass replicas={replicas} or autoscale={value!r}, not both: the autoscaler"
            " decides the number of pods"
        )
    return low, high, cpu


class Endpoint(TrafficVerbs):
    """A model endpoint: its versions and how traffic is split between them.

    Example:
        >>> ep = mlshift.endpoint("churn")  # doctest: +SKIP
        >>> ep.deploy(model_v1, "v1", sample=X[:5])  # doctest: +SKIP
        >>> ep.deploy(model_v2, "v2")  # doctest: +SKIP
        >>> ep.shift({"v1": 90, "v2": 10})  # doctest: +SKIP
    """

    def reader(self) -> Endpoint:
        """A second handle on the same endpoint, with a cache of its own (for a thread).

        Example:
            >>> background = ep.reader()  # doctest: +SKIP
        """
        return Endpoint(self.name, self.target)

    # -- version verbs -----------------------------------------------------------------------

    @overload
    def deploy(
        self,
        model: Any,
        version: str,
        *,
        sample: Any = ...,
        replicas: int = ...,
        trust_pickle: bool = ...,
        resources: Resources | Mapping[str, Any] | None = ...,
        autoscale: tuple[int, int, int] | None = ...,
        startup: str | float | None = ...,
        dry_run: Literal[False] = ...,
    ) -> Version: ...
    @overload
    def deploy(
        self,
        model: Any,
        version: str,
        *,
        sample: Any = ...,
        replicas: int = ...,
        trust_pickle: bool = ...,
        resources: Resources | Mapping[str, Any] | None = ...,
        autoscale: tuple[int, int, int] | None = ...,
        startup: str | float | None = ...,
        dry_run: Literal[True],
    ) -> Plan: ...
    @overload
    def deploy(
        self,
        model: Any,
        version: str,
        *,
        sample: Any = ...,
        replicas: int = ...,
        trust_pickle: bool = ...,
        resources: Resources | Mapping[str, Any] | None = ...,
        autoscale: tuple[int, int, int] | None = ...,
        startup: str | float | None = ...,
        dry_run: bool,
    ) -> Version | Plan: ...
    @retry_on_conflict
    def deploy(
        self,
        model: Any,
        version: str,
        *,
        sample: Any = None,
        replicas: int = 1,
        trust_pickle: bool = False,
        resources: Resources | Mapping[str, Any] | None = None,
        autoscale: tuple[int, int, int] | None = None,
        startup: str | float | None = None,
        dry_run: bool = False,
    ) -> Version | Plan:
        """Deploy ``model`` as a new version: the first takes 100 %, later ones 0 %.

        ``model`` is a fitted model, a bundle directory or a ``BundleInfo``; ``sample`` (a few
        input rows) lets the server check inputs. The version is started and must be ready
        before any route may send it traffic. With ``dry_run=True`` nothing is built or
        touched and the ``Plan`` is returned.

        A model of your own class can only be stored with cloudpickle, and loading a pickle
        runs its code: ``trust_pickle=True`` says you trust it (without it such a model is
        refused before anything is written). It is recorded in the bundle, and only then is
        the version's model_server started with ``--trust-pickle``.

        On a cluster, this version's pods can differ from the target's defaults: ``replicas``
        pods (a PodDisruptionBudget keeps all but one through node drains), or
        ``autoscale=(min, max, target_cpu_percent)`` for a HorizontalPodAutoscaler;
        ``resources`` changes some requests/limits (``{"gpus": 1, "memory_limit": "16Gi"}``);
        ``startup`` is how long the model may take to load (``"15m"``).

        Example:
            >>> v1 = ep.deploy(model, "v1", sample=X_test[:5])  # doctest: +SKIP
            >>> v2 = ep.deploy(my_model, "v2", trust_pickle=True)  # doctest: +SKIP
            >>> ep.deploy(big, "v3", resources={"gpus": 1}, autoscale=(2, 8, 70))  # doctest: +SKIP
        """
        from mlshift._bundle import as_bundle

        check_name(version, kind="version")
        if replicas < 1:
            raise InvalidArgumentError(f"replicas must be at least 1, got {replicas}")
        scale = _autoscale(autoscale, replicas)
        seen = self._base(dry_run=dry_run)
        old = seen.state
        with tempfile.TemporaryDirectory(prefix="mlshift-bundle-") as tmp:
            bundle = as_bundle(model, version, sample=sample, dest=tmp, trust_pickle=trust_pickle)
            existing = old.version(version) if old else None
            # A version with no model on record (its Deployment was deleted by hand) is
            # simply deployed again; one not yet routed (a write was interrupted) is routed.
            if old is not None and existing is not None and existing.model_sha256:
                if existing.model_sha256 != bundle.sha256:
                    raise MlshiftError(
                        f"version {version!r} of {self.name!r} already serves another model"
                        f" (sha256 {existing.model_sha256[:12]}); deploy it under a new name"
                        f" such as {next_name(version, old.version_names)!r}, or"
                        f" ep.remove({version!r}) first"
                    )
                if version in old.traffic.weights:
                    if dry_run:
                        return Plan(old, (), seen.history)
                    self._restart_if_down(bundle, version, old)
                    return self.versions[version]
            spec = self.target.prepare_version(bundle, self.name, version, dry_run=dry_run)
        trusted = spec.trust_pickle or (trust_pickle and bundle.serializer == "cloudpickle")
        try:
            sized = spec.resources.updated(resources)
        except ConfigError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        pod = spec.pod
        if startup is not None:
            pod = dataclasses.replace(pod, startup_s=parse_duration(startup, what="startup"))
        spec = dataclasses.replace(
            spec,
            replicas=scale[0] if scale else replicas,
            resources=sized,
            pod=pod,
            autoscale=scale,
            trust_pickle=trusted,
        )
        base = old or EndpointState(
            self.name,
            namespace=self.target.namespace(),
            hosts=tuple(self.target.hosts),
            gateways=tuple(self.target.gateways),
            routing=self.target.routing_for(self.name),
        )
        plan = self._apply(seen, base.with_version(spec), dry_run=dry_run)
        if dry_run:
            return plan
        status = self.engine.status(plan.state)
        self._applied = dataclasses.replace(self._applied, status=status)
        return self.versions[version]

    def _restart_if_down(self, bundle: BundleInfo, version: str, state: EndpointState) -> None:
        """Deploying a version again with the model it has: a no-op while it is ready; while
        it is down (its process crashed, its bundle copy was damaged) the bundle is put in
        place again and the version restarted, where the target can (local: revive)."""
        status = self.engine.status(state, [version]).get(version)
        if status is None or status.ready:
            log.info("%s/%s is already deployed with this model", self.name, version)
            return
        if "revive" not in self.engine.capabilities:
            log.warning("%s/%s is deployed but not ready: %s", self.name, version, status.reason)
            return
        log.info("%s/%s is down (%s); restarting it", self.name, version, status.reason)
        self.target.prepare_version(bundle, self.name, version)
        self.engine.revive(state)
        self._applied = dataclasses.replace(self._applied, status=self.engine.status(state))

    @overload
    def remove(self, version: str, *, dry_run: Literal[False] = ...) -> Endpoint: ...
    @overload
    def remove(self, version: str, *, dry_run: Literal[True]) -> Plan: ...
    @overload
    def remove(self, version: str, *, dry_run: bool) -> Endpoint | Plan: ...
    @retry_on_conflict
    def remove(self, version: str, *, dry_run: bool = False) -> Endpoint | Plan:
        """Stop and remove ``version``; it must carry no traffic (shift it away first).

        Example:
            >>> ep.remove("v1")  # doctest: +SKIP
        """
        seen = self._existing(version, dry_run=dry_run)
        state = seen.state
        assert state is not None
        weight = int(state.traffic.weights.get(version, 0))
        if weight:
            raise InvalidWeightsError(
                f"version {version!r} still carries {weight} % of traffic; shift it away first,"
                " e.g. ep.promote('<other version>')"
            )
        if len(state.versions) == 1:
            raise MlshiftError(
                f"{version!r} is the last version of {self.name!r}; use ep.delete() to remove"
                " the whole endpoint"
            )
        plan = self._apply(seen, state.without_version(version), dry_run=dry_run)
        return plan if dry_run else self

    def revive(self) -> list[str]:
        """Restart versions whose process died (local target), e.g. after a reboot.

        Returns the versions restarted; routing resumes from the stored configuration. On
        Kubernetes, pods are restarted by their Deployment and this raises
        ``UnsupportedError``.

        Example:
            >>> ep.revive()  # doctest: +SKIP
            ['v2']
        """
        engine = self.engine
        if "revive" not in engine.capabilities:
            raise UnsupportedError(
                f"the {self.target.name} target restarts versions by itself; check ep.status()"
            )
        state = self._existing(None, dry_run=False).state
        assert state is not None
        restarted = engine.revive(state)
        self._applied = dataclasses.replace(self._applied, status=engine.status(state))
        return restarted

    @overload
    def delete(self, *, dry_run: Literal[False] = ...) -> Endpoint: ...
    @overload
    def delete(self, *, dry_run: Literal[True]) -> Plan: ...
    @overload
    def delete(self, *, dry_run: bool) -> Endpoint | Plan: ...
    def delete(self, *, dry_run: bool = False) -> Endpoint | Plan:
        """Remove the endpoint: routes first, then every version. Nothing keeps running.

        Example:
            >>> ep.delete()  # doctest: +SKIP
        """
        try:
            state = self._base(dry_run=dry_run).state
        except (ConfigError, APIError):
            raise
        except MlshiftError as exc:
            # Damaged stored state must not keep the endpoint from being deleted (removing its
            # files by hand would orphan its processes): the engine deletes what it finds.
            log.warning("deleting %s without its stored state: %s", self.name, exc)
            state = None
        plan = plan_delete(state or EndpointState(self.name, namespace=self.target.namespace()))
        if dry_run:
            return plan
        self.engine.execute(plan)
        self._applied, self._planned = Seen(), None
        return self

    # -- faces, loaded on first use ----------------------------------------------------------

    def slider(self, **options: Any) -> Any:
        """An ipywidgets control that shifts traffic, with live per-version plots.

        It does not display itself, so it composes; see ``mlshift._widgets.traffic_slider``
        for the options. Example:
            >>> ep.slider()  # doctest: +SKIP
        """
        from mlshift._widgets import traffic_slider  # lazy shim: the face imports ipywidgets

        return traffic_slider(self, **options)

    def canary(
        self,
        version: str,
        *,
        steps: tuple[int, ...] = (10, 25, 50, 100),
        interval: str | float = "30s",
        gates: Sequence[Gate] | None = None,
        max_error_rate: float | None = None,
        max_p99_ms: float | None = None,
        min_requests: int = 20,
        threshold: int = 2,
        max_inconclusive: int = 3,
        alpha: float = 0.05,
        blocking: bool = False,
    ) -> CanaryRun:
        """Step ``version``'s weight through ``steps`` while the gates find it as good as stable.

        Returns at once with a ``CanaryRun`` (a background thread; ``run.wait()``,
        ``run.cancel()``, ``run.history``); ``blocking=True`` waits. Every ``interval`` the
        gates (default: ``mlshift.gates.default_gates()``: error rate within +0.5 points of
        stable, latency within +20 %, sample ratio) judge what the step has seen so far;
        ``max_error_rate`` / ``max_p99_ms`` add absolute limits. ``threshold`` failing looks
        in a row, or ``max_inconclusive`` inconclusive ones in a row at one step, restore the
        split in place before the run, as do ``run.cancel()`` and any error. ``alpha`` bounds
        the chance that a healthy canary is rolled back over the whole run.

        Example:
            >>> run = ep.canary("v2", steps=(10, 50, 100), interval="30s")  # doctest: +SKIP
            >>> run.wait().outcome  # doctest: +SKIP
            'promoted'
        """
        from mlshift._canary import canary  # lazy shim: the face drives this endpoint's verbs

        return canary(
            self,
            version,
            steps=steps,
            interval=interval,
            gates=gates,
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99_ms,
            min_requests=min_requests,
            threshold=threshold,
            max_inconclusive=max_inconclusive,
            alpha=alpha,
            blocking=blocking,
        )
