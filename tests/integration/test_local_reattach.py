"""Several processes on one local endpoint: what each shows is live, and no change is lost.

Real Envoy and model servers; the "other process" is a real second Python process. Covers:
a new process's ``ep.weights``, ``ep.versions`` and repr show the deployed versions before
any verb (they used to be empty until ``ep.status()``); a process that attached earlier
sees another process's shift without calling anything; two processes shifting 50 times each
at once all succeed (each retries on a conflict until a deadline).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.local import Local

pytestmark = pytest.mark.slow


def _in_another_process(home: Path, code: str) -> str:
    script = textwrap.dedent(
        f"""
        import mlshift
        ep = mlshift.endpoint("churn", target=mlshift.Local({str(home)!r}))
        """
    ) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_new_process_shows_the_live_endpoint_and_an_old_one_follows_its_shifts(
    mesh_factory: Any, local_bundle: Path
) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    mesh.traffic({"v1": 90, "v2": 10})
    home = mesh.target.home

    shown = _in_another_process(home, "print(ep.weights); print(list(ep.versions)); print(ep)")
    assert shown.splitlines() == [
        "{'v1': 90, 'v2': 10}",
        "['v1', 'v2']",
        "<Endpoint churn on local: v1=90, v2=10>",
    ]

    attached = mlshift.Endpoint("churn", Local(home))
    assert attached.weights == {"v1": 90, "v2": 10}
    _in_another_process(home, 'ep.shift({"v1": 40, "v2": 60})')
    assert attached.weights == {"v1": 40, "v2": 60}
    assert "v1=40, v2=60" in repr(attached)
    assert attached.versions["v2"].weight == 60


@pytest.mark.serial  # both writers must overlap: a busy neighbour can serialize them
def test_two_processes_shifting_at_once_lose_no_call(mesh_factory: Any, local_bundle: Path) -> None:
    mesh = mesh_factory("churn")
    mesh.deploy(local_bundle, "v1", "v2")
    home = mesh.target.home
    code = """
        import sys, time
        parity = int(sys.argv[1])
        done = 0
        for i in range(50):
            ep.shift("v2", 2 * (i % 45) + parity + 1)  # odd or even shares: whose write is whose
            done += 1
        print(done)
    """
    script = textwrap.dedent(
        f"""
        import mlshift
        ep = mlshift.endpoint("churn", target=mlshift.Local({str(home)!r}))
        """
    ) + textwrap.dedent(code)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(parity)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for parity in (0, 1)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err  # no ConflictError escaped
        assert out.strip() == "50"
    history = mlshift.Endpoint("churn", Local(home)).history()
    shares = [h["v2"] for h in history[-40:] if "v2" in h]
    assert {s % 2 for s in shares} == {0, 1}  # both writers' changes are in the history
