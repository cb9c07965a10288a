"""A routing change reaches the sidecars before a step that depends on it (promote, remove).

The counterpart models istiod's push (``tests/fixtures/kube_istiod.py``): a change reaches
the proxies ``lag`` seconds after it is stored, and removing a subset before the route change
that stopped using it got there is recorded as a data-plane violation (503 NR). With
istiod's ``Reconciled`` status the engine waits for it (the settle time is tiny here, so only
the status can save it); without status, the settle time stands in.
"""

from __future__ import annotations

import time

import pytest

from mlshift._plan import plan_change
from mlshift._state import TrafficState
from mlshift.kube._discovery import resource
from mlshift.kube._propagation import reconciled, wait_propagated
from tests.fixtures.kube import KubeEmulator
from tests.integration.test_kube_engine import VS, _deploy, _route, _spec, _subsets, _target


def _promote_then_remove(emu: KubeEmulator, settle: float, *, marked: bool = False) -> None:
    engine = _target(emu, settle_time=settle).engine("churn")
    _deploy(engine, _spec("v1"))
    _deploy(engine, _spec("v2"))
    if marked:
        # A cluster whose istiod writes status has marked the VirtualService reconciled by
        # now (about a second after a write). Before any mark, nothing tells such a cluster
        # from one that writes none, and the settle time stands in
        # (test_without_status_the_settle_time_stands_in).
        _wait_until_marked(emu, VS)
    _route(engine, TrafficState({"v1": 0, "v2": 100}))  # promote
    loaded = engine.load("churn")
    assert loaded is not None
    state, history = loaded
    engine.execute(plan_change(state, state.without_version("v1"), history=history))  # remove
    assert _subsets(emu) == ["v2"]


def _wait_until_marked(emu: KubeEmulator, resource: str) -> None:
    deadline = time.monotonic() + 10.0
    while reconciled(emu.obj(resource, "churn"), 1) is None:
        assert time.monotonic() < deadline, f"the istiod stand-in never marked the {resource}"
        time.sleep(0.02)


def test_remove_waits_for_istiods_reconciled_status(kube_emulator: KubeEmulator) -> None:
    istiod = kube_emulator.with_istiod(lag=0.4, status=True)
    _promote_then_remove(kube_emulator, settle=0.01, marked=True)
    assert istiod.violations == []


def test_once_status_was_seen_an_unmarked_object_is_waited_for(
    kube_emulator: KubeEmulator,
) -> None:
    """A VirtualService written moments ago has no Reconciled condition yet: on a cluster
    known to write it, that means "not yet", so the wait lasts until istiod marks it."""
    kube_emulator.with_istiod(lag=2.0, status=True)  # long: the read below comes before it
    engine = _target(kube_emulator, settle_time=0.01).engine("churn")
    _deploy(engine, _spec("v1"))
    vs = kube_emulator.obj(VS, "churn")
    assert vs is not None
    res = resource(engine.api, "VirtualService")
    generation = int(vs["metadata"]["generation"])
    assert reconciled(vs, generation) is None  # not marked yet
    wait_propagated(
        engine.api, res, "ml", "churn", generation,
        settle=0.01, timeout=10.0, poll=0.02, writes_status=True,
    )  # fmt: skip
    assert reconciled(kube_emulator.obj(VS, "churn"), generation)


@pytest.mark.parametrize(("settle", "safe"), [(0.6, True), (0.0, False)])
def test_without_status_the_settle_time_stands_in(
    kube_emulator: KubeEmulator, settle: float, safe: bool
) -> None:
    """No Reconciled status: a settle time longer than the push lag keeps the data plane
    whole; none at all (what mlshift did before) removes the subset under live routes."""
    istiod = kube_emulator.with_istiod(lag=0.3, status=False)
    _promote_then_remove(kube_emulator, settle=settle)
    assert (istiod.violations == []) is safe, istiod.violations
