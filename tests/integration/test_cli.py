"""The ``mlshift`` command line over the local target with real model servers behind Envoy.

In-process (``main([...])`` with capsys) on a state directory of the test's own
(``$MLSHIFT_HOME``): deploy from a joblib file with a CSV sample, a skops file and a bundle
directory; list; shift with pairs and with one ``VERSION=WEIGHT`` (the rest pro rata, as
``ep.shift("v3", 20)``); promote; metrics after traffic; revive a killed version; remove;
delete; and ``mlshift demo`` start to finish. Every endpoint is deleted at the end, and every
process it started killed, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io

import mlshift
from mlshift.__main__ import main

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``$MLSHIFT_HOME`` for the test; its endpoints are deleted and their processes killed."""
    path = tmp_path / "home"
    monkeypatch.setenv("MLSHIFT_HOME", str(path))
    yield path
    target = mlshift.Local(path)
    for name in target.endpoints():
        engine = target.engine(name)
        pids = engine.pids()
        with contextlib.suppress(Exception):
            mlshift.Endpoint(name, target).delete()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Three saved models of one DataFrame task and a CSV sample of their input."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    X = pd.DataFrame({"tenure": rng.integers(0, 72, 200), "spend": rng.normal(60, 20, 200)})
    y = (X["tenure"] > 30).to_numpy().astype(int)
    models = [LogisticRegression(C=c, max_iter=500).fit(X, y) for c in (1.0, 0.1, 0.01)]
    out = {"sample": tmp_path / "sample.csv", "joblib": tmp_path / "v1.joblib"}
    X[:20].to_csv(out["sample"], index=False)
    joblib.dump(models[0], out["joblib"])
    out["skops"] = tmp_path / "v2.skops"
    skops.io.dump(models[1], out["skops"])
    out["bundle"] = mlshift.bundle(models[2], "v3", sample=X[:5], path=tmp_path / "b3").path
    return out


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _weights(home: Path) -> dict[str, int]:
    ep = mlshift.Endpoint("churn", mlshift.Local(home))
    ep.status()
    return ep.weights


def test_the_command_line_runs_an_endpoint(
    home: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "deploy", "churn", "v1", str(files["joblib"]), "--sample", str(files["sample"])
    )
    assert code == 0, err
    assert "deployed v1 of churn at http://127.0.0.1:" in out
    assert _run(capsys, "deploy", "churn", "v2", str(files["skops"]))[0] == 0
    assert _run(capsys, "deploy", "churn", "v3", str(files["bundle"]))[0] == 0
    assert _run(capsys, "list") == (0, "churn\n", "")
    assert _weights(home) == {"v1": 100, "v2": 0, "v3": 0}

    code, out, _ = _run(capsys, "shift", "churn", "v1=50", "v2=50")
    assert code == 0
    assert "v1" in out and "50" in out
    assert _run(capsys, "shift", "churn", "v3=20")[0] == 0  # the rest pro rata
    assert _weights(home) == {"v1": 40, "v2": 40, "v3": 20}
    code, _, err = _run(capsys, "shift", "churn", "v9=10")
    assert code == 2
    assert err.startswith("mlshift: ") and "v9" in err

    assert _run(capsys, "promote", "churn", "v2")[0] == 0
    assert _weights(home) == {"v1": 0, "v2": 100, "v3": 0}

    ep = mlshift.Endpoint("churn", mlshift.Local(home))
    X = pd.read_csv(files["sample"])
    ep.send(X, rps=50, duration="2s").wait(15)
    deadline = time.monotonic() + 20
    out = ""
    while time.monotonic() < deadline and "v2" not in out:
        code, out, _ = _run(capsys, "metrics", "churn", "--since", "1m", "--step", "1s")
        assert code == 0
        time.sleep(1)
    assert "v2" in out and "rps" in out

    pid = ep.engine.pids()["v3"]
    os.kill(pid, signal.SIGKILL)
    code, out, err = _run(capsys, "revive", "churn")
    assert code == 0, err
    assert out.startswith("restarted v3\n")
    assert ep.engine.pids()["v3"] != pid

    code, _, err = _run(capsys, "remove", "churn", "v2")
    assert code == 2
    assert "still carries 100 %" in err
    code, out, _ = _run(capsys, "remove", "churn", "v1")
    assert code == 0
    assert "v1" not in out.split("\n", 1)[1]  # the status table after the removal
    assert list(_weights(home)) == ["v2", "v3"]

    assert _run(capsys, "delete", "churn") == (0, "deleted churn\n", "")
    assert _run(capsys, "list")[1] == ""
    code, _, err = _run(capsys, "status", "churn")
    assert code == 2
    assert "no endpoint 'churn'" in err


def test_the_demo_runs_start_to_finish(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "demo")
    assert code == 0, err
    assert "== promote v2" in out
    assert "deleted the endpoint; nothing left running" in out
    assert mlshift.Local(home).endpoints() == []
