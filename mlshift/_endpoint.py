"""The facade: ``Endpoint``, the object a notebook holds, and the verbs that change it.

Every verb (``deploy``, ``shift``, ``promote``, ``rollback``, ``remove``, ``delete``) reads
what the target has, builds the new desired state, validates it, and hands the ordered plan
to the target's engine; it returns the new state so a notebook cell shows it. Properties
and reprs only read the cached state and never do I/O. In a dry run nothing is touched and
no cluster is needed: the state is built up in memory and the plan is returned.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mlshift._display import Version, YAMLText, version_table
from mlshift._engine import VersionStatus
from mlshift._exceptions import (
    APIError,
    ConfigError,
    ConflictError,
    InvalidWeightsError,
    MlshiftError,
    UnknownVersionError,
)
from mlshift._names import check_name
from mlshift._observe import Observing
from mlshift._plan import Plan, plan_change, plan_delete
from mlshift._render import render
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState
from mlshift._weights import rest_pro_rata, validate_weights

if TYPE_CHECKING:
    import pandas as pd

    from mlshift._engine import Engine, Target

__all__ = ["Endpoint", "Version", "YAMLText"]

log = logging.getLogger("mlshift")
HISTORY_LIMIT = 50
CONFLICT_ATTEMPTS = 4
P = ParamSpec("P")
R = TypeVar("R")


def _retry_on_conflict(verb: Callable[P, R]) -> Callable[P, R]:
    """Re-run a verb when the target's routes changed since it read them.

    Each attempt re-reads the state and recomputes the change, so a concurrent change by
    another notebook is built upon, never overwritten. Gives up after a few attempts.
    """

    @functools.wraps(verb)
    def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return verb(*args, **kwargs)
            except ConflictError as exc:
                if attempt == CONFLICT_ATTEMPTS or kwargs.get("dry_run"):
                    raise
                log.info("%s: routes changed meanwhile (%s); re-reading", verb.__name__, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    return retrying


class Endpoint(Observing):
    """A model endpoint: its versions and how traffic is split between them.

    Example:
        >>> ep = mlshift.endpoint("churn")  # doctest: +SKIP
        >>> ep.deploy(model_v1, "v1", sample=X[:5])  # doctest: +SKIP
        >>> ep.deploy(model_v2, "v2")  # doctest: +SKIP
        >>> ep.shift({"v1": 90, "v2": 10})  # doctest: +SKIP
    """

    def __init__(self, name: str, target: Target | None = None) -> None:
        self.name = check_name(name, kind="endpoint name")
        if target is None:
            from mlshift.local import Local

            target = Local()
        self.target = target
        self._engine: Engine | None = None
        self._state: EndpointState | None = None
        self._history: tuple[TrafficState, ...] = ()
        # Dry runs build up a desired state here, never in the applied cache above.
        self._planned: tuple[EndpointState, tuple[TrafficState, ...]] | None = None
        self._status: dict[str, VersionStatus] = {}

    # -- reading -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The target's engine for this endpoint (created on first use)."""
        if self._engine is None:
            self._engine = self.target.engine(self.name)
        return self._engine

    def _refresh(self, *, dry_run: bool = False) -> EndpointState | None:
        """Read the applied state from the target; a dry run builds on earlier dry runs."""
        if dry_run and self._planned is not None:
            return self._planned[0]
        try:
            loaded = self.engine.load(self.name)
        except (ConfigError, APIError) as exc:
            if not dry_run:
                raise
            log.info("dry run without a reachable target (%s); planning from memory", exc)
            return self._state
        if loaded is None:
            self._state, self._history = None, ()
        else:
            self._state, self._history = loaded
        return self._state

    def _readable(self) -> EndpointState | None:
        """The state to read metrics for; without the target's API (metrics need only
        Prometheus on a cluster) the cached state, or just the endpoint's name."""
        try:
            return self._refresh()
        except (ConfigError, APIError) as exc:
            log.info("reading metrics without the target's API (%s)", exc)
            return self._state or EndpointState(self.name, namespace=self.target.namespace())

    def _hist(self, *, dry_run: bool) -> tuple[TrafficState, ...]:
        """The traffic history a change builds on (the planned one in a dry run)."""
        if dry_run and self._planned is not None:
            return self._planned[1]
        return self._history

    def _existing(self, version: str | None, *, dry_run: bool) -> EndpointState:
        """Read the state and check ``version`` (when given) is one of its versions."""
        state = self._refresh(dry_run=dry_run)
        if state is None or not state.versions:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no versions yet; deploy one with"
                " ep.deploy(model, 'v1')"
            )
        if version is not None:
            self._known(state, version)
        return state

    def _known(self, state: EndpointState, version: str) -> None:
        if state.version(version) is None:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no version {version!r}; it has "
                f"{', '.join(state.version_names)}"
            )

    def _shown(self) -> tuple[EndpointState | None, bool]:
        """What reprs and properties show: the applied state, else the dry-run plan."""
        if self._state is None and self._planned is not None:
            return self._planned[0], True
        return self._state, False

    @property
    def versions(self) -> dict[str, Version]:
        """The versions as last seen, by name (no I/O); before anything is applied, as planned
        by dry runs."""
        state, _ = self._shown()
        if state is None:
            return {}
        out = {}
        for spec in state.versions:
            st = self._status.get(spec.name)
            out[spec.name] = Version(
                name=spec.name,
                weight=int(state.traffic.weights.get(spec.name, 0)),
                ready=st.ready if st else None,
                model_sha256=spec.model_sha256,
                image=spec.image,
                bundle=spec.bundle,
                reason=st.reason if st else "",
            )
        return out

    @property
    def weights(self) -> dict[str, int]:
        """The traffic weights as last seen (no I/O); before anything is applied, as planned."""
        state, _ = self._shown()
        return dict(state.traffic.weights) if state else {}

    @property
    def url(self) -> str:
        """The address requests to this endpoint go to (read once, then cached)."""
        state = self._state or self._existing(None, dry_run=False)
        return self.engine.url(state)

    def status(self) -> pd.DataFrame:
        """Ask the target how every version is doing: weight, readiness and why not.

        Example:
            >>> ep.status()  # doctest: +SKIP
                weight  ready reason
            v1      90   True
        """
        import pandas as pd

        state = self._refresh()
        self._status = self.engine.status(state) if state else {}
        rows = [dataclasses.asdict(s) for s in self._status.values()]
        columns = ["version", "weight", "ready", "reason", "replicas", "ready_replicas", "address"]
        return pd.DataFrame(rows, columns=columns).set_index("version")

    def history(self) -> list[dict[str, int]]:
        """Past traffic weights, oldest first (what ``rollback()`` returns to)."""
        self._refresh()
        return [dict(t.weights) for t in self._history]

    def render(self) -> YAMLText:
        """Return the endpoint's Kubernetes and Istio objects as multi-document YAML.

        Works without a cluster after dry-run deploys. Example:
            >>> print(ep.render())  # doctest: +SKIP
        """
        if self._planned is not None:
            state: EndpointState | None = self._planned[0]
        else:
            state = self._state if self._state is not None else self._refresh(dry_run=True)
        if state is None:
            raise UnknownVersionError(
                f"endpoint {self.name!r} has no versions to render; deploy one (dry_run=True works)"
            )
        return YAMLText(render(state).to_yaml())

    # -- changing ----------------------------------------------------------------------------

    def _apply(
        self,
        old: EndpointState | None,
        new: EndpointState,
        *,
        dry_run: bool,
        history: tuple[TrafficState, ...] | None = None,
    ) -> Plan:
        """Plan and run old -> new; a traffic change pushes the old split onto the history."""
        if history is None:
            history = self._hist(dry_run=dry_run)
            if old is not None and old.traffic != new.traffic:
                history = (*history, old.traffic)[-HISTORY_LIMIT:]
        return self._run(plan_change(old, new, history=history), dry_run=dry_run)

    def _run(self, plan: Plan, *, dry_run: bool) -> Plan:
        if not dry_run:
            started = time.perf_counter()
            self.engine.execute(plan)
            log.info(
                "%s: %d steps in %.3f s", self.name, len(plan.steps), time.perf_counter() - started
            )
            self._state, self._history, self._planned = plan.state, plan.history, None
        else:
            self._planned = (plan.state, plan.history)
        return plan

    @_retry_on_conflict
    def deploy(
        self,
        model: Any,
        version: str,
        *,
        sample: Any = None,
        replicas: int = 1,
        dry_run: bool = False,
    ) -> Version | Plan:
        """Deploy ``model`` as a new version: the first takes 100 %, later ones 0 %.

        ``model`` is a fitted model, a bundle directory or a ``BundleInfo``; ``sample`` (a few
        input rows) lets the server check inputs. The version is started and must be ready
        before any route may send it traffic. With ``dry_run=True`` nothing is built or
        touched and the plan is returned.

        Example:
            >>> v1 = ep.deploy(model, "v1", sample=X_test[:5])  # doctest: +SKIP
        """
        from mlshift._bundle import as_bundle

        check_name(version, kind="version")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        old = self._refresh(dry_run=dry_run)
        with tempfile.TemporaryDirectory(prefix="mlshift-bundle-") as tmp:
            bundle = as_bundle(model, version, sample=sample, dest=tmp)
            existing = old.version(version) if old else None
            # A version with no model on record (its Deployment was deleted by hand) is
            # simply deployed again.
            if old is not None and existing is not None and existing.model_sha256:
                if existing.model_sha256 == bundle.sha256:
                    log.info("%s/%s is already deployed with this model", self.name, version)
                    if dry_run:
                        return Plan(old, (), self._hist(dry_run=True))
                    return self.versions[version]
                raise MlshiftError(
                    f"version {version!r} of {self.name!r} already serves another model "
                    f"(sha256 {existing.model_sha256[:12]}); deploy it under a new name such as "
                    f"{_next_name(version, old.version_names if old else [])!r}, or "
                    f"ep.remove({version!r}) first"
                )
            spec = self.target.prepare_version(bundle, self.name, version, dry_run=dry_run)
        spec = dataclasses.replace(spec, replicas=replicas)
        base = old or EndpointState(
            self.name,
            namespace=self.target.namespace(),
            hosts=tuple(getattr(self.target, "hosts", ())),
            gateways=tuple(getattr(self.target, "gateways", ())),
        )
        plan = self._apply(old, base.with_version(spec), dry_run=dry_run)
        if dry_run:
            return plan
        self._status = self.engine.status(plan.state)
        return self.versions[version]

    def _set_traffic(
        self,
        traffic: TrafficState,
        state: EndpointState,
        *,
        dry_run: bool,
        history: tuple[TrafficState, ...] | None = None,
    ) -> Endpoint | Plan:
        ready = None
        if not dry_run:
            self._status = self.engine.status(state)
            ready = [v for v, s in self._status.items() if s.ready]
        weights = validate_weights(traffic.weights, versions=state.version_names, ready=ready)
        traffic = dataclasses.replace(traffic, weights=weights)
        if traffic == state.traffic:
            return self
        started = time.perf_counter()
        plan = self._apply(state, state.with_traffic(traffic), dry_run=dry_run, history=history)
        if dry_run:
            return plan
        log.info(
            "%s: traffic %s in %.1f ms",
            self.name,
            ", ".join(f"{v}={w}" for v, w in weights.items()),
            (time.perf_counter() - started) * 1000,
        )
        return self

    @_retry_on_conflict
    def shift(
        self,
        weights: Mapping[str, int] | str,
        percent: int | None = None,
        *,
        dry_run: bool = False,
    ) -> Endpoint | Plan:
        """Change how traffic is split: ``shift({"v1": 90, "v2": 10})`` or ``shift("v2", 50)``.

        The second form gives ``v2`` 50 % and splits the rest over the other versions in
        their current ratio. Weights are integers 0-100 summing to 100, on ready versions;
        anything else raises ``InvalidWeightsError`` and routing stays as it was.

        Example:
            >>> ep.shift("v2", 50)  # doctest: +SKIP
        """
        state = self._refresh(dry_run=dry_run)
        if state is None or not state.versions:
            raise InvalidWeightsError(f"endpoint {self.name!r} has no versions to route to")
        if isinstance(weights, str):
            if percent is None:
                raise InvalidWeightsError(
                    f"shift({weights!r}) needs a percentage, e.g. shift({weights!r}, 50)"
                )
            self._known(state, weights)
            new = rest_pro_rata(state.traffic.weights, weights, percent)
        else:
            if percent is not None:
                raise InvalidWeightsError("give either a weights mapping or (version, percent)")
            new = dict(weights)
        return self._set_traffic(
            dataclasses.replace(state.traffic, weights=new), state, dry_run=dry_run
        )

    @_retry_on_conflict
    def promote(self, version: str, *, dry_run: bool = False) -> Endpoint | Plan:
        """Send all traffic to ``version`` (header rules stay; a mirror to it is dropped).

        Example:
            >>> ep.promote("v2")  # doctest: +SKIP
        """
        state = self._existing(version, dry_run=dry_run)
        mirror = state.traffic.mirror
        traffic = TrafficState(
            {version: 100},
            headers=state.traffic.headers,
            mirror=None if mirror and mirror.version == version else mirror,
        )
        return self._set_traffic(traffic, state, dry_run=dry_run)

    @_retry_on_conflict
    def rollback(self, to: str | None = None, *, dry_run: bool = False) -> Endpoint | Plan:
        """Return to the traffic split before the last change, or send everything to ``to``.

        Each call steps one change further back. Example:
            >>> ep.rollback()  # doctest: +SKIP
        """
        if to is not None:
            return self.promote(to, dry_run=dry_run)
        state = self._refresh(dry_run=dry_run)
        history = list(self._hist(dry_run=dry_run))
        # Skip entries that route exactly as now (deploying v2 turns {v1: 100} into
        # {v1: 100, v2: 0}): rolling back to them would change nothing.
        while history and _same_split(history[-1], state):
            history.pop()
        if state is None or not history:
            raise InvalidWeightsError(
                f"endpoint {self.name!r} has no earlier traffic split to roll back to;"
                " use ep.rollback(to='v1') to send everything to one version"
            )
        previous = history.pop()
        gone = [v for v, w in previous.weights.items() if w and state.version(v) is None]
        if gone:
            raise InvalidWeightsError(
                f"the previous split sent traffic to removed version(s) {', '.join(gone)};"
                " use ep.rollback(to=...) or ep.shift({...})"
            )
        traffic = TrafficState(
            {v: w for v, w in previous.weights.items() if state.version(v) is not None},
            headers=tuple(h for h in previous.headers if state.version(h.version)),
            mirror=previous.mirror
            if previous.mirror and state.version(previous.mirror.version)
            else None,
        )
        # A rollback pops the history instead of pushing the split it leaves.
        return self._set_traffic(traffic, state, dry_run=dry_run, history=tuple(history))

    @_retry_on_conflict
    def route_header(
        self,
        header: str,
        value: str,
        version: str | None,
        *,
        match: str = "exact",
        dry_run: bool = False,
    ) -> Endpoint | Plan:
        """Send requests whose ``header`` matches ``value`` to ``version``, whatever the weights.

        ``match`` is ``"exact"``, ``"prefix"`` or ``"regex"``; ``version=None`` removes the
        rule for ``header``. Header rules are checked before the weighted split.

        Example:
            >>> ep.route_header("x-canary", "yes", "v2")  # doctest: +SKIP
            >>> ep.route_header("x-canary", "yes", None)  # doctest: +SKIP
        """
        if match not in ("exact", "prefix", "regex"):
            raise ValueError(f"match must be 'exact', 'prefix' or 'regex', got {match!r}")
        if not header or not header.replace("-", "").isalnum():
            raise ValueError(f"{header!r} is not an HTTP header name (letters, digits and '-')")
        state = self._existing(version, dry_run=dry_run)
        rules = tuple(r for r in state.traffic.headers if r.header != header.lower())
        if version is not None:
            rule = HeaderRoute(version, header.lower(), value, match)  # type: ignore[arg-type]
            rules = (*rules, rule)
        traffic = dataclasses.replace(state.traffic, headers=rules)
        return self._set_traffic(traffic, state, dry_run=dry_run)

    @_retry_on_conflict
    def mirror(
        self, version: str | None, percent: float = 100.0, *, dry_run: bool = False
    ) -> Endpoint | Plan:
        """Copy ``percent`` % of live requests to ``version`` (answers dropped); None stops it.

        Example:
            >>> ep.mirror("v3", 20)  # doctest: +SKIP
        """
        state = self._existing(version, dry_run=dry_run)
        if version is not None and not 0 < percent <= 100:
            raise ValueError(f"mirror percent must be within (0, 100], got {percent}")
        mirror = Mirror(version, float(percent)) if version else None
        traffic = dataclasses.replace(state.traffic, mirror=mirror)
        return self._set_traffic(traffic, state, dry_run=dry_run)

    @_retry_on_conflict
    def remove(self, version: str, *, dry_run: bool = False) -> Endpoint | Plan:
        """Stop and remove ``version``; it must carry no traffic (shift it away first).

        Example:
            >>> ep.remove("v1")  # doctest: +SKIP
        """
        state = self._existing(version, dry_run=dry_run)
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
        plan = self._apply(state, state.without_version(version), dry_run=dry_run)
        return plan if dry_run else self

    def revive(self) -> list[str]:
        """Restart versions whose process died (local target), e.g. after a reboot.

        Returns the versions restarted; routing resumes from the stored configuration. On
        Kubernetes, pods are restarted by their Deployment and this raises.

        Example:
            >>> ep.revive()  # doctest: +SKIP
            ['v2']
        """
        revive = getattr(self.engine, "revive", None)
        if revive is None:
            raise MlshiftError(
                f"the {self.target.name} target restarts versions by itself; check ep.status()"
            )
        state = self._existing(None, dry_run=False)
        restarted: list[str] = revive(state)
        self._status = self.engine.status(state)
        return restarted

    def delete(self, *, dry_run: bool = False) -> Endpoint | Plan:
        """Remove the endpoint: routes first, then every version. Nothing keeps running.

        Example:
            >>> ep.delete()  # doctest: +SKIP
        """
        state = self._refresh(dry_run=dry_run)
        plan = plan_delete(state or EndpointState(self.name, namespace=self.target.namespace()))
        if not dry_run:
            self.engine.execute(plan)
            self._state, self._history, self._status = None, (), {}
        return plan if dry_run else self

    # -- display -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        weights = ", ".join(f"{v}={w}" for v, w in self.weights.items())
        planned = " (dry run)" if self._shown()[1] else ""
        return f"<Endpoint {self.name} on {self.target.name}{planned}: {weights or 'no versions'}>"

    def _repr_html_(self) -> str:
        planned = ", dry run: planned, not applied" if self._shown()[1] else ""
        title = f"{self.name} ({self.target.name}{planned})"
        return version_table(list(self.versions.values()), title)


def _same_split(traffic: TrafficState, state: EndpointState | None) -> bool:
    """True when ``traffic`` routes exactly as ``state`` does (missing weights count as 0)."""
    if state is None:
        return False
    ours = {v: w for v, w in state.traffic.weights.items() if w}
    theirs = {v: w for v, w in traffic.weights.items() if w}
    return (
        ours == theirs
        and traffic.headers == state.traffic.headers
        and traffic.mirror == state.traffic.mirror
    )


def _next_name(version: str, taken: list[str]) -> str:
    import re

    m = re.match(r"^(.*?)(\d+)$", version)
    stem, n = (m.group(1), int(m.group(2))) if m else (version + "-", 1)
    candidate = f"{stem}{n + 1}"
    while candidate in taken:
        n += 1
        candidate = f"{stem}{n + 1}"
    return candidate
