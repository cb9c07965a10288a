"""The planner: from the state an endpoint is in to the one asked for, the ordered writes. Pure.

The order is what keeps traffic flowing (istio/istio#6335, #23956): a new version's
Deployment first and only once it is ready its DestinationRule subset, and only then the
VirtualService that may send it traffic. Removing runs the other way: VirtualService first,
then the subset, then the Deployment. Both engines execute the same steps, and a dry run
returns them for review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlshift._exceptions import InvalidWeightsError
from mlshift._render import (
    deployment_name,
    managed_routes,
    render_deployment,
    render_destination_rule,
    render_service,
    to_yaml,
)
from mlshift._state import EndpointState, TrafficState, VersionSpec
from mlshift._workload import companions

__all__ = [
    "HISTORY_LIMIT",
    "Action",
    "Plan",
    "Step",
    "extend_history",
    "plan_change",
    "plan_delete",
    "rollback_traffic",
]

HISTORY_LIMIT = 50
"""Traffic splits kept for ``rollback()``; older ones are dropped."""

Action = Literal["apply", "wait-ready", "patch-routes", "delete"]


@dataclass(frozen=True)
class Step:
    """One write (or wait) against the target.

    ``apply`` creates or replaces ``obj``; ``wait-ready`` blocks until ``version`` serves;
    ``patch-routes`` swaps mlshift's routes of the VirtualService for ``obj["http"]`` (of
    the HTTPRoute for ``obj["rules"]``, Gateway API routing) and
    keeps every other route — provided the live managed routes still equal
    ``obj["previous"]`` (None: no check), else the engine raises ``ConflictError`` so the
    caller re-reads and recomputes; ``delete`` removes the named object.
    """

    action: Action
    kind: str
    name: str
    obj: dict[str, Any] | None = None
    version: str | None = None

    def describe(self) -> str:
        """One line for people: ``apply DestinationRule churn (subsets v1, v2)``."""
        text = f"{self.action} {self.kind} {self.name}"
        if self.kind == "DestinationRule" and self.obj:
            subsets = ", ".join(s["name"] for s in self.obj["spec"]["subsets"])
            text += f" (subsets {subsets or 'none'})"
        elif self.action == "patch-routes" and self.obj and "rules" in self.obj:
            main = next(r for r in self.obj["rules"] if r["name"] == "mlshift")
            weights = ", ".join(
                f"{b['name'].removeprefix(self.name + '-')}={b['weight']}"
                for b in main["backendRefs"]
            )
            text += f" (weights {weights})"
        elif self.action == "patch-routes" and self.obj:
            main = next(r for r in self.obj["http"] if r["name"] == "mlshift")
            weights = ", ".join(
                f"{d['destination']['subset']}={d['weight']}" for d in main["route"]
            )
            text += f" (weights {weights})"
        return text


@dataclass(frozen=True)
class Plan:
    """The ordered steps that take an endpoint to ``state``, and the history to keep.

    What ``dry_run=True`` verbs return: print it to review the writes, ``to_yaml()`` for
    the objects. A plan with no steps changes nothing.

    Example:
        >>> plan = ep.shift({"v1": 90, "v2": 10}, dry_run=True)  # doctest: +SKIP
        >>> print(plan)  # doctest: +SKIP
        plan for ml/churn:
          1. patch-routes VirtualService churn (weights v1=90, v2=10)
    """

    state: EndpointState
    steps: tuple[Step, ...]
    history: tuple[TrafficState, ...] = field(default=())

    def __str__(self) -> str:
        lines = [f"plan for {self.state.namespace}/{self.state.name}:"]
        lines += [f"  {i}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines) if self.steps else lines[0] + " nothing to change"

    def to_yaml(self) -> str:
        """The objects this plan writes, as multi-document YAML."""
        return to_yaml(s.obj for s in self.steps if s.obj is not None and s.action == "apply")

    def _repr_html_(self) -> str:
        import html

        items = "".join(f"<li>{html.escape(s.describe())}</li>" for s in self.steps)
        title = html.escape(f"plan for {self.state.namespace}/{self.state.name}")
        return f"<b>{title}</b><ol>{items or '<li>nothing to change</li>'}</ol>"


def _routes_step(state: EndpointState, old: EndpointState | None) -> Step:
    # "previous" is what the change was computed from: an engine that finds other managed
    # routes live must refuse (ConflictError) rather than overwrite a concurrent change.
    return Step(
        "patch-routes",
        "VirtualService",
        state.name,
        {"http": managed_routes(state), "previous": managed_routes(old) if old else None},
    )


def plan_change(
    old: EndpointState | None,
    new: EndpointState,
    *,
    history: Sequence[TrafficState] = (),
) -> Plan:
    """Return the steps that take an endpoint from ``old`` (None: nothing yet) to ``new``.

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> new = EndpointState("churn").with_version(VersionSpec("v1"))
        >>> [s.describe() for s in plan_change(None, new).steps][:2]
        ['apply Deployment churn-v1', 'wait-ready Deployment churn-v1']
    """
    if new.routing == "gateway-api":
        from mlshift._plan_gateway import plan_change_gateway

        return plan_change_gateway(old, new, history=history)
    before = {v.name: v for v in (old.versions if old else ())}
    steps: list[Step] = []
    for spec in new.versions:
        if before.get(spec.name) != spec:
            name = deployment_name(new.name, spec.name)
            steps.append(Step("apply", "Deployment", name, render_deployment(new, spec), spec.name))
            steps.append(Step("wait-ready", "Deployment", name, None, spec.name))
            # Once it is ready: a rollout that fails leaves no autoscaler or budget behind.
            steps += [Step("apply", o["kind"], name, o, spec.name) for o in companions(new, spec)]
    if old is None:
        steps.append(Step("apply", "Service", new.name, render_service(new)))
    old_names = list(before)
    union = old_names + [v for v in new.version_names if v not in before]
    if old is None or union != old_names:
        steps.append(
            Step("apply", "DestinationRule", new.name, render_destination_rule(new, union))
        )
    if old is None or managed_routes(old) != managed_routes(new):
        steps.append(_routes_step(new, old))
    removed = [v for v in old_names if v not in new.version_names]
    if removed:
        steps.append(Step("apply", "DestinationRule", new.name, render_destination_rule(new)))
        for version in removed:
            steps += _delete_version(new, before[version])
    return Plan(new, tuple(steps), tuple(history))


def _delete_version(state: EndpointState, spec: VersionSpec) -> list[Step]:
    """Delete a version's autoscaler and disruption budget, then its Deployment."""
    name = deployment_name(state.name, spec.name)
    steps = [
        Step("delete", obj["kind"], name, None, spec.name)
        for obj in reversed(companions(state, spec))
    ]
    return [*steps, Step("delete", "Deployment", name, None, spec.name)]


def plan_delete(state: EndpointState) -> Plan:
    """Return the steps that remove an endpoint: routes first, Deployments last."""
    if state.routing == "gateway-api":
        from mlshift._plan_gateway import plan_delete_gateway

        return plan_delete_gateway(state)
    steps = [
        Step("delete", "VirtualService", state.name),
        Step("delete", "DestinationRule", state.name),
        Step("delete", "Service", state.name),
        *(step for spec in state.versions for step in _delete_version(state, spec)),
    ]
    return Plan(state, tuple(steps))


def extend_history(
    history: Sequence[TrafficState], old: EndpointState | None, new: EndpointState
) -> tuple[TrafficState, ...]:
    """Return the history after ``old`` -> ``new``: a traffic change pushes the split it leaves.

        Example:
            >>> from mlshift._state import EndpointState, TrafficState, VersionSpec
    from mlshift._workload import companions
            >>> old = EndpointState("churn", traffic=TrafficState({"v1": 100}))
            >>> new = old.with_traffic(TrafficState({"v1": 50, "v2": 50}))
            >>> [dict(t.weights) for t in extend_history((), old, new)]
            [{'v1': 100}]
    """
    if old is not None and old.traffic != new.traffic:
        return (*history, old.traffic)[-HISTORY_LIMIT:]
    return tuple(history)


def _same_split(traffic: TrafficState, state: EndpointState) -> bool:
    """True when ``traffic`` routes exactly as ``state`` does (missing weights count as 0)."""
    ours = {v: w for v, w in state.traffic.weights.items() if w}
    theirs = {v: w for v, w in traffic.weights.items() if w}
    return (
        ours == theirs
        and traffic.headers == state.traffic.headers
        and traffic.mirror == state.traffic.mirror
    )


def rollback_traffic(
    state: EndpointState, history: Sequence[TrafficState]
) -> tuple[TrafficState, tuple[TrafficState, ...]]:
    """Return the split a rollback returns to and the history left after it.

    Entries that route exactly as now are skipped (deploying v2 turns ``{v1: 100}`` into
    ``{v1: 100, v2: 0}``: rolling back to that would change nothing). A rollback pops the
    history instead of pushing the split it leaves, so each call steps one change back.

    Raises:
        InvalidWeightsError: there is no earlier split, or it sent traffic to a version
            that has since been removed.

    Example:
        >>> from mlshift._state import EndpointState, TrafficState, VersionSpec
        >>> now = EndpointState("churn", versions=(VersionSpec("v1"), VersionSpec("v2")),
        ...                     traffic=TrafficState({"v1": 50, "v2": 50}))
        >>> dict(rollback_traffic(now, [TrafficState({"v1": 100})])[0].weights)
        {'v1': 100}
    """
    left = list(history)
    while left and _same_split(left[-1], state):
        left.pop()
    if not left:
        raise InvalidWeightsError(
            f"endpoint {state.name!r} has no earlier traffic split to roll back to;"
            " use ep.rollback(to='v1') to send everything to one version"
        )
    previous = left.pop()
    gone = [v for v, w in previous.weights.items() if w and state.version(v) is None]
    if gone:
        raise InvalidWeightsError(
            f"the previous split sent traffic to removed version(s) {', '.join(gone)};"
            " use ep.rollback(to=...) or ep.shift({...})"
        )
    mirror = previous.mirror
    traffic = TrafficState(
        {v: w for v, w in previous.weights.items() if state.version(v) is not None},
        headers=tuple(h for h in previous.headers if state.version(h.version)),
        mirror=mirror if mirror and state.version(mirror.version) else None,
    )
    return traffic, tuple(left)
