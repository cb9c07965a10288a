"""DestinationRule subsets: read-modify-write with resourceVersion, mlshift's subsets only.

``subsets`` is an atomic list for a merge patch: writing mlshift's list whole erased subsets
someone else added, and two notebooks deploying at once lost one version's subset (its
VirtualService route then pointed at a missing subset: 503). Against the strict counterpart
(resourceVersion, 409 on a stale write), two concurrent deploys keep both subsets and a
foreign subset survives deploys and removals.
"""

from __future__ import annotations

import concurrent.futures

from mlshift._exceptions import ConflictError
from mlshift._plan import plan_change
from tests.fixtures.kube import KubeEmulator
from tests.integration.test_kube_engine import DR, _deploy, _spec, _subsets, _target, _weights

SHADOW = {"name": "shadow", "labels": {"track": "shadow"}}


def _add_foreign_subset(emu: KubeEmulator) -> None:
    dr = emu.obj(DR, "churn")
    assert dr is not None
    dr["spec"]["subsets"].append(SHADOW)
    emu.put(DR, "churn", dr)


def test_a_concurrent_subset_write_is_not_lost(kube_emulator: KubeEmulator) -> None:
    engine = _target(kube_emulator).engine("churn")
    _deploy(engine, _spec("v1"))
    _add_foreign_subset(kube_emulator)

    def other_notebook() -> None:  # adds its v3 subset between mlshift's read and write
        kube_emulator.edit_now(
            DR,
            "churn",
            lambda dr: dr["spec"]["subsets"].append({"name": "v3", "labels": {"version": "v3"}}),
        )

    kube_emulator.race("PATCH", "destinationrules", other_notebook)
    _deploy(engine, _spec("v2"))

    assert _subsets(kube_emulator) == ["v1", "shadow", "v3", "v2"]
    patches = kube_emulator.patches("destinationrules")
    assert all(p["metadata"].get("resourceVersion") for p in patches)


def test_two_notebooks_deploying_at_once_lose_nothing(kube_emulator: KubeEmulator) -> None:
    """Two plans made from the same read run at once, as two notebooks' deploys do.

    Their routes cannot both win (one gets ``ConflictError``, which the facade answers by
    re-reading and planning again), but neither subset may be lost meanwhile.
    """
    _deploy(_target(kube_emulator).engine("churn"), _spec("v1"))
    _add_foreign_subset(kube_emulator)
    engines = {v: _target(kube_emulator).engine("churn") for v in ("v2", "v3")}
    loaded = engines["v2"].load("churn")
    assert loaded is not None
    old, history = loaded
    plans = {v: plan_change(old, old.with_version(_spec(v)), history=history) for v in engines}

    def run(version: str) -> str:
        try:
            engines[version].execute(plans[version])
        except ConflictError:
            return "conflict"
        return "done"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = dict(zip(engines, pool.map(run, engines), strict=True))

    assert sorted(_subsets(kube_emulator)) == ["shadow", "v1", "v2", "v3"]
    for version, outcome in outcomes.items():
        if outcome == "conflict":  # what the facade does next: re-read, plan, write
            _deploy(engines[version], _spec(version))
    loaded = engines["v2"].load("churn")
    assert loaded is not None
    assert sorted(loaded[0].version_names) == ["v1", "v2", "v3"]
    assert sorted(_weights(kube_emulator)) == ["v1", "v2", "v3"]

    state = loaded[0]
    engines["v2"].execute(plan_change(state, state.without_version("v3"), history=loaded[1]))
    assert sorted(_subsets(kube_emulator)) == ["shadow", "v1", "v2"]
