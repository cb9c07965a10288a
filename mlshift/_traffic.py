"""The verbs that move traffic: ``shift``, ``promote``, ``rollback``, ``route_header``, ``mirror``.

``TrafficVerbs`` is the middle of the facade (``EndpointReader`` below it, ``Endpoint``
above): it turns a traffic change into a new desired state, validates the weights against
the versions that are ready, plans the writes (``mlshift._plan``) and hands the plan to the
engine (``_apply``, which ``Endpoint``'s version verbs use too). With ``dry_run=True``
nothing is touched and the ``Plan`` is returned; a change that changes nothing returns an
empty ``Plan`` in a dry run.

When the routes changed between the read and the write (another notebook shifted), the
engine raises ``ConflictError`` and the verb runs again on what is now live: this is the
one retry layer (engines never retry a conflict themselves), with jittered backoff until a
deadline.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Literal, ParamSpec, Self, TypeVar, overload

from mlshift._exceptions import ConflictError, InvalidArgumentError, InvalidWeightsError
from mlshift._plan import Plan, extend_history, plan_change, rollback_traffic
from mlshift._reader import EndpointReader, Seen
from mlshift._state import EndpointState, HeaderRoute, Mirror, TrafficState
from mlshift._weights import rest_pro_rata, validate_weights

__all__ = ["CONFLICT_DEADLINE_S", "TrafficVerbs", "retry_on_conflict"]

log = logging.getLogger("mlshift")
CONFLICT_DEADLINE_S = 2.0
"""How long a verb keeps re-reading and retrying while other writers change the routes."""
P = ParamSpec("P")
R = TypeVar("R")


def retry_on_conflict(verb: Callable[P, R]) -> Callable[P, R]:
    """Run a verb under the engine's transaction; re-run it when the routes changed anyway.

    Where the target has a write lock (the local mesh), each attempt holds it from its read
    to its write, so writers take turns. Elsewhere each attempt re-reads the state and
    recomputes the change, so a concurrent change by another notebook is built upon, never
    overwritten. Waits grow from 10 ms to 200 ms with jitter (two writers must not retry in
    lockstep); gives up after ``CONFLICT_DEADLINE_S``. A dry run writes nothing: no lock.
    """

    @functools.wraps(verb)
    def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
        ep = args[0]
        assert isinstance(ep, EndpointReader)
        deadline = time.monotonic() + CONFLICT_DEADLINE_S
        attempt = 0
        while True:
            attempt += 1
            try:
                if kwargs.get("dry_run"):
                    return verb(*args, **kwargs)
                with ep.engine.transaction():
                    return verb(*args, **kwargs)
            except ConflictError as exc:
                if kwargs.get("dry_run"):
                    raise
                pause = min(0.2, 0.01 * 2**attempt) * random.uniform(0.5, 1.5)
                if time.monotonic() + pause > deadline:
                    raise ConflictError(
                        f"{exc} (gave up after {attempt} attempts in {CONFLICT_DEADLINE_S:g} s:"
                        " someone else keeps changing the routes)"
                    ) from exc
                log.info("%s: routes changed meanwhile (%s); re-reading", verb.__name__, exc)
                time.sleep(pause)

    return retrying


class TrafficVerbs(EndpointReader):
    """The traffic half of ``Endpoint`` (use ``mlshift.endpoint(name)``).

    Example:
        >>> ep.shift({"v1": 90, "v2": 10})  # doctest: +SKIP
        >>> ep.rollback()  # doctest: +SKIP
    """

    # -- running a change --------------------------------------------------------------------

    def _apply(
        self,
        seen: Seen,
        new: EndpointState,
        *,
        dry_run: bool,
        history: tuple[TrafficState, ...] | None = None,
    ) -> Plan:
        """Plan ``seen.state`` -> ``new`` and run it (or keep it, in a dry run)."""
        if history is None:
            history = extend_history(seen.history, seen.state, new)
        plan = plan_change(seen.state, new, history=history)
        if dry_run:
            self._planned = Seen(plan.state, plan.history, seen.status)
            return plan
        started = time.perf_counter()
        self.engine.execute(plan)
        log.info(
            "%s: %d steps in %.3f s", self.name, len(plan.steps), time.perf_counter() - started
        )
        self._applied, self._planned = Seen(plan.state, plan.history, seen.status), None
        return plan

    def _set_traffic(
        self,
        traffic: TrafficState,
        seen: Seen,
        *,
        dry_run: bool,
        history: tuple[TrafficState, ...] | None = None,
    ) -> Self | Plan:
        state = seen.state
        assert state is not None  # callers checked there are versions
        weights = validate_weights(traffic.weights, versions=state.version_names)
        if not dry_run:
            # Only a version gaining weight must be ready now: moving traffic away from one
            # that is down is always allowed (and each status read costs milliseconds).
            old = state.traffic.weights
            gaining = [v for v, w in weights.items() if w > old.get(v, 0)]
            status = self.engine.status(state, gaining)
            self._applied = dataclasses.replace(
                self._applied, status={**self._applied.status, **status}
            )
            ready = [v for v in state.version_names if v not in status or status[v].ready]
            weights = validate_weights(weights, versions=state.version_names, ready=ready)
        traffic = dataclasses.replace(traffic, weights=weights)
        if traffic == state.traffic:
            return Plan(state, (), seen.history) if dry_run else self
        plan = self._apply(seen, state.with_traffic(traffic), dry_run=dry_run, history=history)
        return plan if dry_run else self

    # -- traffic verbs -----------------------------------------------------------------------

    @overload
    def shift(
        self,
        weights: Mapping[str, int] | str,
        percent: int | None = ...,
        *,
        dry_run: Literal[False] = ...,
    ) -> Self: ...
    @overload
    def shift(
        self, weights: Mapping[str, int] | str, percent: int | None = ..., *, dry_run: Literal[True]
    ) -> Plan: ...
    @overload
    def shift(
        self, weights: Mapping[str, int] | str, percent: int | None = ..., *, dry_run: bool
    ) -> Self | Plan: ...
    @retry_on_conflict
    def shift(
        self,
        weights: Mapping[str, int] | str,
        percent: int | None = None,
        *,
        dry_run: bool = False,
    ) -> Self | Plan:
        """Change how traffic is split: ``shift({"v1": 90, "v2": 10})`` or ``shift("v2", 50)``.

        The second form gives ``v2`` 50 % and splits the rest over the other versions in
        their current ratio. Weights are integers 0-100 summing to 100, on ready versions;
        anything else raises ``InvalidWeightsError`` and routing stays as it was.

        Example:
            >>> ep.shift("v2", 50)  # doctest: +SKIP
        """
        seen = self._base(dry_run=dry_run)
        state = seen.state
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
        traffic = dataclasses.replace(state.traffic, weights=new)
        return self._set_traffic(traffic, seen, dry_run=dry_run)

    @overload
    def promote(self, version: str, *, dry_run: Literal[False] = ...) -> Self: ...
    @overload
    def promote(self, version: str, *, dry_run: Literal[True]) -> Plan: ...
    @overload
    def promote(self, version: str, *, dry_run: bool) -> Self | Plan: ...
    @retry_on_conflict
    def promote(self, version: str, *, dry_run: bool = False) -> Self | Plan:
        """Send all traffic to ``version`` (header rules stay; a mirror to it is dropped).

        Example:
            >>> ep.promote("v2")  # doctest: +SKIP
        """
        seen = self._existing(version, dry_run=dry_run)
        assert seen.state is not None
        mirror = seen.state.traffic.mirror
        traffic = TrafficState(
            {version: 100},
            headers=seen.state.traffic.headers,
            mirror=None if mirror and mirror.version == version else mirror,
        )
        return self._set_traffic(traffic, seen, dry_run=dry_run)

    @overload
    def rollback(self, to: str | None = ..., *, dry_run: Literal[False] = ...) -> Self: ...
    @overload
    def rollback(self, to: str | None = ..., *, dry_run: Literal[True]) -> Plan: ...
    @overload
    def rollback(self, to: str | None = ..., *, dry_run: bool) -> Self | Plan: ...
    @retry_on_conflict
    def rollback(self, to: str | None = None, *, dry_run: bool = False) -> Self | Plan:
        """Return to the traffic split before the last change, or send everything to ``to``.

        Each call steps one change further back. Example:
            >>> ep.rollback()  # doctest: +SKIP
        """
        if to is not None:
            return self.promote(to, dry_run=dry_run)
        seen = self._existing(None, dry_run=dry_run)
        assert seen.state is not None
        traffic, history = rollback_traffic(seen.state, seen.history)
        return self._set_traffic(traffic, seen, dry_run=dry_run, history=history)

    @overload
    def route_header(
        self,
        header: str,
        value: str,
        version: str | None,
        *,
        match: str = ...,
        dry_run: Literal[False] = ...,
    ) -> Self: ...
    @overload
    def route_header(
        self,
        header: str,
        value: str,
        version: str | None,
        *,
        match: str = ...,
        dry_run: Literal[True],
    ) -> Plan: ...
    @overload
    def route_header(
        self, header: str, value: str, version: str | None, *, match: str = ..., dry_run: bool
    ) -> Self | Plan: ...
    @retry_on_conflict
    def route_header(
        self,
        header: str,
        value: str,
        version: str | None,
        *,
        match: str = "exact",
        dry_run: bool = False,
    ) -> Self | Plan:
        """Send requests whose ``header`` matches ``value`` to ``version``, whatever the weights.

        ``match`` is ``"exact"``, ``"prefix"`` or ``"regex"``; ``version=None`` removes the
        rule for ``header``. Header rules are checked before the weighted split.

        Example:
            >>> ep.route_header("x-canary", "yes", "v2")  # doctest: +SKIP
            >>> ep.route_header("x-canary", "yes", None)  # doctest: +SKIP
        """
        if match not in ("exact", "prefix", "regex"):
            raise InvalidArgumentError(f"match must be 'exact', 'prefix' or 'regex', got {match!r}")
        if not header or not header.replace("-", "").isalnum():
            raise InvalidArgumentError(
                f"{header!r} is not an HTTP header name (letters, digits and '-')"
            )
        seen = self._existing(version, dry_run=dry_run)
        assert seen.state is not None
        rules = tuple(r for r in seen.state.traffic.headers if r.header != header.lower())
        if version is not None:
            rule = HeaderRoute(version, header.lower(), value, match)  # type: ignore[arg-type]
            rules = (*rules, rule)
        traffic = dataclasses.replace(seen.state.traffic, headers=rules)
        return self._set_traffic(traffic, seen, dry_run=dry_run)

    @overload
    def mirror(
        self, version: str | None, percent: float = ..., *, dry_run: Literal[False] = ...
    ) -> Self: ...
    @overload
    def mirror(
        self, version: str | None, percent: float = ..., *, dry_run: Literal[True]
    ) -> Plan: ...
    @overload
    def mirror(
        self, version: str | None, percent: float = ..., *, dry_run: bool
    ) -> Self | Plan: ...
    @retry_on_conflict
    def mirror(
        self, version: str | None, percent: float = 100.0, *, dry_run: bool = False
    ) -> Self | Plan:
        """Copy ``percent`` % of live requests to ``version`` (answers dropped); None stops it.

        Example:
            >>> ep.mirror("v3", 20)  # doctest: +SKIP
        """
        if version is not None and not 0 < percent <= 100:
            raise InvalidArgumentError(f"mirror percent must be within (0, 100], got {percent}")
        seen = self._existing(version, dry_run=dry_run)
        assert seen.state is not None
        mirror = Mirror(version, float(percent)) if version else None
        traffic = dataclasses.replace(seen.state.traffic, mirror=mirror)
        return self._set_traffic(traffic, seen, dry_run=dry_run)

    def shadow(self, version: str | None, percent: float = 100.0) -> Self:
        """Mirror ``percent`` % of live requests to ``version``: users only ever get the
        primary's answers, and both versions journal theirs, so ``ep.compare()`` can pair
        them by request id. ``shadow(None)`` stops it. (``mirror`` under a clearer name.)

        Example:
            >>> ep.shadow("v2", percent=100)  # doctest: +SKIP
            >>> ep.compare("v1", "v2", since="10m")  # doctest: +SKIP
        """
        return self.mirror(version, percent)
