"""Serving benchmark: model_server vs Seldon MLServer 1.7 vs in-process predict, in one run.

Single-row requests for a RandomForestClassifier (50 trees, depth 8, 20 float features) at 1,
16 and 64 connections over loopback, driven by ``wrk`` (Debian) with a Lua script for the POST
body. Baselines measured in the same run: the in-process ``model.predict`` rate (the limit for
an unbatched server) and MLServer 1.7 with its scikit-learn runtime and
MLSERVER_PARALLEL_WORKERS=2, installed in its own venv at benchmarks/.work/mlserver-venv::

    python3 -m venv benchmarks/.work/mlserver-venv
    benchmarks/.work/mlserver-venv/bin/pip install "mlserver==1.7.*" "mlserver-sklearn==1.7.*" \\
        "uvloop<0.22" scikit-learn==<the version in .venv>

Run: ``.venv/bin/python benchmarks/serving.py [--duration 10]``; the table goes to
benchmarks/results/serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results" / "serving.md"
MLSERVER_VENV = WORK / "mlserver-venv"
CONNECTIONS = (1, 16, 64)


@dataclass
class Run:
    server: str
    protocol: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train() -> tuple[Any, np.ndarray[Any, Any]]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 20))
    y = (X[:, :5].sum(axis=1) + rng.normal(scale=0.5, size=5000) > 0).astype(np.int64)
    model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(X, y)
    return model, X


def in_process(model: Any, X: np.ndarray[Any, Any], seconds: float) -> tuple[float, float, float]:
    """Single-row predicts per second, its median latency, and rows/s in 32-row batches."""
    row = X[:1]
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t0)
    batch = X[:32]
    calls, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        model.predict(batch)
        calls += 1
    return len(times) / sum(times), float(np.median(times)) * 1000, calls * 32 / seconds


def _ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``3.1ms``, ``1.2s``, ``1.5m``) in ms; NaN when it had none."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:  # e.g. "-nanus" when no request completed
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str, body: dict[str, Any], connections: int, seconds: float
) -> tuple[float, float, float, int]:
    script = WORK / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    # One wrk thread leaves the second core to the server under test (2-core machines).
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?timeout (\d+)"):
        match = re.search(pattern, out)
        errors += int(match.group(1)) if match else 0
    return rps, p50, p99, errors


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextmanager
def running(cmd: list[str], ready_url: str, env: dict[str, str], log: Path) -> Iterator[None]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(ready_url, proc)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # MLServer forks workers: stop the whole group
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def bench_model_server(model: Any, X: np.ndarray[Any, Any], seconds: float) -> list[Run]:
    sys.path.insert(0, str(ROOT))
    from mlshift._bundle import write_bundle

    bundle = write_bundle(model, "v1", sample=X[:5], dest=WORK / "rf-bundle", name="rf")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "model_server", "--model-dir", str(bundle.path),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    runs: list[Run] = []
    row = X[100].tolist()
    v1 = {"instances": [row]}
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 20], "datatype": "FP64", "data": row}]}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with running(cmd, f"{url}/v2/health/ready", env, WORK / "model_server.log"):
        for c in CONNECTIONS:
            wrk(f"{url}/v2/models/rf/infer", v2, c, 1)  # warm-up
            runs.append(
                Run(
                    "mlshift model_server",
                    "v2",
                    c,
                    *wrk(f"{url}/v2/models/rf/infer", v2, c, seconds),
                )
            )
            runs.append(
                Run(
                    "mlshift model_server",
                    "v1",
                    c,
                    *wrk(f"{url}/v1/models/rf:predict", v1, c, seconds),
                )
            )
    return runs


def bench_mlserver(model: Any, X: np.ndarray[Any, Any], seconds: float) -> list[Run] | str:
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        return f"MLServer is not installed at {MLSERVER_VENV} (see this script's docstring)"
    import joblib

    models = WORK / "mlserver-models"
    shutil.rmtree(models, ignore_errors=True)
    (models / "rf").mkdir(parents=True)
    joblib.dump(model, models / "rf" / "model.joblib")
    (models / "rf" / "model-settings.json").write_text(json.dumps({
        "name": "rf",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }))  # fmt: skip
    port = free_port()
    env = dict(os.environ)
    env.update(
        MLSERVER_PARALLEL_WORKERS="2",
        MLSERVER_HTTP_PORT=str(port),
        MLSERVER_GRPC_PORT=str(free_port()),
        MLSERVER_METRICS_PORT=str(free_port()),
        MLSERVER_HOST="127.0.0.1",
        MLSERVER_LOGGING_LEVEL="WARNING",
        MLSERVER_DEBUG="false",  # no per-request access log: its best setting
    )
    url = f"http://127.0.0.1:{port}"
    row = X[100].tolist()
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 20], "datatype": "FP64", "data": row}]}
    runs: list[Run] = []
    with running(
        [str(binary), "start", str(models)], f"{url}/v2/models/rf/ready", env, WORK / "mlserver.log"
    ):
        for c in CONNECTIONS:
            wrk(f"{url}/v2/models/rf/infer", v2, c, 1)  # warm-up
            runs.append(
                Run(
                    "MLServer 1.7 (2 workers)",
                    "v2",
                    c,
                    *wrk(f"{url}/v2/models/rf/infer", v2, c, seconds),
                )
            )
    return runs


def report(
    limit: tuple[float, float, float], ours: list[Run], theirs: list[Run] | str, seconds: float
) -> str:
    single_rps, single_ms, batch_rows = limit
    lines = [
        "# Serving benchmark",
        "",
        f"RandomForestClassifier (50 trees, depth 8, 20 float features), single-row requests,"
        f" `wrk -t1` for {seconds:g} s per cell over loopback, {os.cpu_count()} CPUs, all measured"
        " in one run by `benchmarks/serving.py`.",
        "",
        f"In-process limit: one-row `predict` {single_rps:.0f}/s ({single_ms:.2f} ms each);"
        f" 32-row batches {batch_rows:.0f} rows/s.",
        "",
        "| server | protocol | connections | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    runs = ours + (theirs if isinstance(theirs, list) else [])
    for r in runs:
        lines.append(
            f"| {r.server} | {r.protocol} | {r.connections} | {r.rps:.0f} | {r.p50_ms:.2f}"
            f" | {r.p99_ms:.2f} | {r.errors} |"
        )
    lines += ["", "## Ratios (model_server v2 vs baselines, same run)", ""]
    if isinstance(theirs, str):
        lines.append(f"MLServer not measured: {theirs}")
    lines += [
        "| connections | × MLServer req/s | MLServer p99 / ours | × in-process single predict |",
        "|---:|---:|---:|---:|",
    ]
    for c in CONNECTIONS:
        mine = next(r for r in ours if r.connections == c and r.protocol == "v2")
        other = next(
            (r for r in runs if r.connections == c and r.server.startswith("MLServer")), None
        )
        x_ml = f"{mine.rps / other.rps:.1f}×" if other else "n/a"
        p99 = f"{other.p99_ms / mine.p99_ms:.1f}×" if other else "n/a"
        lines.append(f"| {c} | {x_ml} | {p99} | {mine.rps / single_rps:.1f}× |")
    lines += [
        "",
        f"Load average when the run ended: {os.getloadavg()[0]:.1f} (other work on the machine"
        " slows both servers alike; compare ratios, not absolute numbers).",
        "",
        "Ratios above 1 are better for model_server. Beating the single-predict rate is what"
        " adaptive batching buys: concurrent requests share one `predict` call.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk cell")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    model, X = train()
    limit = in_process(model, X, 3.0)
    ours = bench_model_server(model, X, args.duration)
    theirs = bench_mlserver(model, X, args.duration)
    text = report(limit, ours, theirs, args.duration)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
