"""Who decides what a bundle may execute, against real model_server processes and the local mesh.

Covers (issue 12, section 2): a hand-made bundle that says ``"serializer": "cloudpickle"`` never
runs its payload when deployed on the local target (model_server refuses it without
``--trust-pickle``, and the reason shows in the raised error and in ``ep.status()``); a model
bundled with ``trust_pickle=True`` records it and is served; skops files are loaded only with the
types the *reader* allows (scikit-learn, XGBoost, LightGBM, numpy, scipy, or ``--trust-types``),
never the types the manifest lists; with a signing key model_server serves only bundles signed
with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift._exceptions import NotReadyError
from mlshift.local import Local

pytestmark = pytest.mark.slow


class Payload:
    """What an attacker puts in a pickle: unpickling it touches ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def handmade_pickle_bundle(dest: Path, marker: Path, **manifest: Any) -> Path:
    """A bundle written by hand: a pickle payload and a manifest that calls it cloudpickle."""
    dest.mkdir(parents=True)
    data = pickle.dumps(Payload(marker))
    (dest / "model.pkl").write_bytes(data)
    (dest / "mlshift.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "name": "echo",
                "version": "v9",
                "flavor": "pyfunc",
                "serializer": "cloudpickle",
                "file": "model.pkl",
                "sha256": hashlib.sha256(data).hexdigest(),
                **manifest,
            }
        )
    )
    return dest


@pytest.fixture
def endpoint() -> Iterator[mlshift.Endpoint]:
    home = Path(tempfile.mkdtemp(prefix="mls-"))
    ep = mlshift.Endpoint("churn", Local(home))
    pids: set[int] = set()
    try:
        yield ep
    finally:
        with contextlib.suppress(Exception):
            pids.update(ep.engine.pids().values())  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            ep.delete()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def test_a_handmade_pickle_bundle_never_runs_on_the_local_target(
    endpoint: mlshift.Endpoint, rf_bundle: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    handmade = handmade_pickle_bundle(tmp_path / "handmade", marker)
    endpoint.deploy(rf_bundle, "v1")  # a skops bundle: nobody said to trust a pickle

    with pytest.raises(NotReadyError) as refused:
        endpoint.deploy(handmade, "v2")
    assert "--trust-pickle" in str(refused.value), refused.value
    assert not marker.exists()
    status = endpoint.status()
    assert "v2" not in status.index or not status.loc["v2", "ready"]

    # The same payload put in place of the running skops version's bundle copy: refused at
    # revive, and ep.status() says why.
    copy = endpoint.target.home / "endpoints" / "churn" / "bundles" / "v1"  # type: ignore[attr-defined]
    shutil.rmtree(copy)
    handmade_pickle_bundle(copy, marker)
    os.kill(endpoint.engine.pids()["v1"], signal.SIGKILL)  # type: ignore[attr-defined]
    with pytest.raises(NotReadyError):
        endpoint.revive()
    assert not marker.exists()
    status = endpoint.status()
    assert not status.loc["v1", "ready"]
    assert "--trust-pickle" in str(status.loc["v1", "reason"]), status.loc["v1", "reason"]


def test_model_server_serves_only_what_its_operator_trusts(
    local_bundle: Path, server_logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.serving import ServerProcess, echo_bundle, start_server

    monkeypatch.setenv("MLSHIFT_SIGNING_KEY", "team-secret")
    signed = echo_bundle(tmp_path / "signed")
    monkeypatch.delenv("MLSHIFT_SIGNING_KEY")
    key = {"MLSHIFT_SIGNING_KEY": "team-secret"}
    servers: dict[str, ServerProcess] = {}
    try:
        # Side by side: each process takes seconds to import its libraries.
        for case, bundle, env in (
            ("pickle, not trusted", local_bundle, {"MLSHIFT_TRUST_PICKLE": ""}),
            ("unsigned, with a key", local_bundle, key),
            ("signed, another key", signed, {"MLSHIFT_SIGNING_KEY": "another"}),
            ("signed, the key", signed, key),
        ):
            servers[case] = start_server(bundle, server_logs, env=env, wait=False)
        refusals = {}
        for case, server in servers.items():
            if case != "signed, the key":
                assert server.proc.wait(timeout=120) == 2, server.log()
                refusals[case] = server.log()
        servers["signed, the key"].wait_ready(timeout=120)
    finally:
        for server in servers.values():
            server.stop()
    assert "--trust-pickle (or MLSHIFT_TRUST_PICKLE=1)" in refusals["pickle, not trusted"]
    assert "it is not signed" in refusals["unsigned, with a key"]
    assert "signature does not match" in refusals["signed, another key"]
