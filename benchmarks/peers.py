"""The peer servers the serving benchmark measures model_server against, each in its own venv.

MLServer 1.7 (scikit-learn runtime), KServe's ``ModelServer`` (the ``kserve`` package, serving
the joblib model the way its sklearnserver does) and BentoML (a minimal service around the same
model). Their dependencies conflict with each other and with mlshift's, so each is installed
into a venv of its own under ``benchmarks/.work/venvs/`` the first time the benchmark runs
(``pip`` from PyPI; the same scikit-learn version as ours, so the joblib file loads) and reused
after. ``python -m benchmarks.peers`` only installs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
VENVS = WORK / "venvs"


def _sklearn_pin() -> str:
    import sklearn

    return f"scikit-learn=={sklearn.__version__}"


# uvloop < 0.22: MLServer 1.7 does not start with newer ones (SeldonIO/MLServer#2286).
REQUIREMENTS: dict[str, list[str]] = {
    "mlserver": ["mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22"],
    "kserve": ["kserve==0.21.*"],
    "bentoml": ["bentoml==1.4.*"],
}


def ensure_venv(name: str) -> Path:
    """Return the venv of peer ``name``, creating and installing it on first use.

    Example:
        >>> ensure_venv("kserve") / "bin" / "python"  # doctest: +SKIP
    """
    venv = VENVS / name
    stamp = venv / ".installed.json"
    wanted = [*REQUIREMENTS[name], _sklearn_pin(), "joblib"]
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, *wanted], check=True)
    stamp.write_text(json.dumps(wanted))
    return venv


@dataclass
class Peer:
    """How to start one peer server: command, environment, readiness URL and request route."""

    label: str
    cmd: list[str]
    env: dict[str, str]
    ready_path: str
    infer_path: str
    protocol: str

    def body(self, rows: list[list[float]]) -> dict[str, Any]:
        """The request body of ``rows`` in this peer's protocol."""
        if self.protocol == "v2":
            flat = [v for row in rows for v in row]
            shape = [len(rows), len(rows[0])]
            return {
                "inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": flat}]
            }
        return {"instances": rows}


KSERVE_SCRIPT = '''"""KServe's ModelServer with a joblib model, like its sklearnserver."""
import argparse

import joblib
import numpy as np
from kserve import Model, ModelServer, model_server


class SKLearnModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.model = None

    def load(self):
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        rows = np.asarray(payload["instances"])
        return {"predictions": self.model.predict(rows).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_path)
    model.load()
    ModelServer().start([model])
'''

BENTO_SERVICE = '''"""A minimal BentoML service around the joblib scikit-learn model."""
import os

import bentoml
import joblib
import numpy as np


# No access log line per request: its best setting, as for the other peers.
@bentoml.service(workers=int(os.environ["RF_WORKERS"]), logging={"access": {"enabled": False}})
class RF:
    def __init__(self):
        self.model = joblib.load(os.environ["RF_MODEL"])

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> list[int]:
        return self.model.predict(np.asarray(instances)).tolist()
'''


def mlserver(model_file: Path, port: int, ports: tuple[int, int], workers: int) -> Peer:
    """MLServer with its scikit-learn runtime and ``workers`` parallel inference workers."""
    venv = ensure_venv("mlserver")
    models = WORK / "mlserver-models"
    shutil.rmtree(models, ignore_errors=True)
    (models / "rf").mkdir(parents=True)
    shutil.copy(model_file, models / "rf" / "model.joblib")
    (models / "rf" / "model-settings.json").write_text(json.dumps({
        "name": "rf",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }))  # fmt: skip
    env = {
        "MLSERVER_PARALLEL_WORKERS": str(workers),
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(ports[0]),
        "MLSERVER_METRICS_PORT": str(ports[1]),
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_LOGGING_LEVEL": "WARNING",
        "MLSERVER_DEBUG": "false",  # no per-request access log: its best setting
    }
    return Peer(
        f"MLServer 1.7 ({workers} workers)",
        [str(venv / "bin" / "mlserver"), "start", str(models)],
        env,
        "/v2/models/rf/ready",
        "/v2/models/rf/infer",
        "v2",
    )


def kserve(model_file: Path, port: int, ports: tuple[int, int], workers: int) -> Peer:
    """KServe's ModelServer (uvicorn workers) with a joblib scikit-learn model, v1 protocol."""
    venv = ensure_venv("kserve")
    script = WORK / "kserve_rf.py"
    script.write_text(KSERVE_SCRIPT)
    cmd = [
        str(venv / "bin" / "python"), str(script), "--model_name", "rf",
        "--model_path", str(model_file), "--http_port", str(port),
        "--grpc_port", str(ports[0]), "--workers", str(workers), "--enable_grpc", "false",
        # Its best setting: no log line per request (as MLServer runs with MLSERVER_DEBUG off).
        "--enable_latency_logging", "false", "--configure_logging", "false",
    ]  # fmt: skip
    return Peer(
        f"KServe 0.21 ({workers} worker{'s' if workers > 1 else ''})",
        cmd,
        {},
        "/v1/models/rf",
        "/v1/models/rf:predict",
        "v1",
    )


def bentoml(model_file: Path, port: int, ports: tuple[int, int], workers: int) -> Peer:
    """A minimal BentoML 1.4 service (``workers`` processes), JSON ``{"instances": rows}``."""
    venv = ensure_venv("bentoml")
    service_dir = WORK / "bento"
    service_dir.mkdir(parents=True, exist_ok=True)
    (service_dir / "service.py").write_text(BENTO_SERVICE)
    cmd = [
        str(venv / "bin" / "bentoml"), "serve", "service:RF", "--working-dir", str(service_dir),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {"RF_MODEL": str(model_file), "RF_WORKERS": str(workers), "BENTOML_DO_NOT_TRACK": "true"}
    return Peer(
        f"BentoML 1.4 ({workers} worker{'s' if workers > 1 else ''})",
        cmd,
        env,
        "/readyz",
        "/predict",
        "v1",
    )


if __name__ == "__main__":
    for peer in sys.argv[1:] or list(REQUIREMENTS):
        sys.stdout.write(f"{peer}: {ensure_venv(peer)}\n")
