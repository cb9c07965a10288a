"""The planner for Gateway API routing: the same safe order, with version Services. Pure.

A new version's Deployment first, then (once it is ready) its Service ``<endpoint>-<version>``,
and only then the HTTPRoute rules that may send it traffic; removing runs the other way: the
HTTPRoute first, then the version's Service, then its Deployment. ``mlshift._plan`` hands
states with ``routing="gateway-api"`` here, so both engines and dry runs see these steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlshift._plan import Plan, Step
from mlshift._render import deployment_name, render_deployment, render_service
from mlshift._render_gateway import managed_rules, render_version_service, version_service_name
from mlshift._state import EndpointState, TrafficState

__all__ = ["plan_change_gateway", "plan_delete_gateway"]


def _rules_step(state: EndpointState, old: EndpointState | None) -> Step:
    # "previous": the managed rules the change was computed from (see Step).
    return Step(
        "patch-routes",
        "HTTPRoute",
        state.name,
        {"rules": managed_rules(state), "previous": managed_rules(old) if old else None},
    )


def plan_change_gateway(
    old: EndpointState | None,
    new: EndpointState,
    *,
    history: Sequence[TrafficState] = (),
) -> Plan:
    """Return the steps that take a Gateway API endpoint from ``old`` to ``new``.

    Example:
        >>> from mlshift._state import EndpointState, VersionSpec
        >>> new = EndpointState("churn", routing="gateway-api").with_version(VersionSpec("v1"))
        >>> [s.describe() for s in plan_change_gateway(None, new).steps][2:4]
        ['apply Service churn-v1', 'apply Service churn']
    """
    before = {v.name: v for v in (old.versions if old else ())}
    steps: list[Step] = []
    for spec in new.versions:
        if before.get(spec.name) != spec:
            name = deployment_name(new.name, spec.name)
            steps.append(Step("apply", "Deployment", name, render_deployment(new, spec), spec.name))
            steps.append(Step("wait-ready", "Deployment", name, None, spec.name))
        if spec.name not in before:
            service = render_version_service(new, spec.name)
            name = version_service_name(new.name, spec.name)
            steps.append(Step("apply", "Service", name, service, spec.name))
    if old is None:
        steps.append(Step("apply", "Service", new.name, render_service(new)))
    if old is None or managed_rules(old) != managed_rules(new):
        steps.append(_rules_step(new, old))
    for version in (v for v in before if new.version(v) is None):
        name = version_service_name(new.name, version)
        steps.append(Step("delete", "Service", name, None, version))
        steps.append(
            Step("delete", "Deployment", deployment_name(new.name, version), None, version)
        )
    return Plan(new, tuple(steps), tuple(history))


def plan_delete_gateway(state: EndpointState) -> Plan:
    """Return the steps that remove a Gateway API endpoint: the route first, Deployments last."""
    steps = [
        Step("delete", "HTTPRoute", state.name),
        *(
            Step("delete", "Service", version_service_name(state.name, v), None, v)
            for v in state.version_names
        ),
        Step("delete", "Service", state.name),
        *(
            Step("delete", "Deployment", deployment_name(state.name, v), None, v)
            for v in state.version_names
        ),
    ]
    return Plan(state, tuple(steps))
