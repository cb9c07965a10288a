"""Routing benchmark: the local mesh routed from an HTTPRoute beside a VirtualService, one run.

Two endpoints run at once, one per routing (``mlshift.Local(routing="istio")`` and
``mlshift.Local(routing="gateway-api")``), each with two versions of the same small model
behind its own Envoy, driven through the facade as a notebook does. The measurements are
interleaved (routing A, routing B, A, B, ...) so both see the same machine load:

- split at 90/10: the observed share of v2 over 2,000 requests, 3 repeats;
- header rule ``x-canary: yes`` -> v2 with weights 100/0: share of v2 with the header, with
  another value of it, and without it (500 requests each);
- mirror of 30 % to v2 with weights 100/0: copies v2 received (Envoy's
  ``upstream_rq_completed`` of v2's cluster) per 2,000 requests, 2 repeats;
- ``ep.shift()`` latency, 10 shifts alternating 100/0 and 0/100.

Goals (issue 14): split within 3 points at 2,000 requests, the header rule exact, the mirror at
its percent, and the same numbers from both routings.

Run: ``.venv/bin/python -m benchmarks routing``; the tables go to
benchmarks/results/routing.md.
"""

from __future__ import annotations

import os
import statistics
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
from mlshift.local import Local, LocalEngine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "routing.md"
HEADER = "x-mlshift-version"
ROUTINGS = ("istio", "gateway-api")
N = 2000
REPEATS = 3


def setup(home: Path, routing: str) -> mlshift.Endpoint:
    """Two versions of a LinearRegression on a Local target with ``routing``."""
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(0).normal(size=(200, 4))
    model = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0, 4.0]))
    info = write_bundle(model, "v1", sample=X[:3], dest=home / "src" / "bundle", name="bench")
    ep = mlshift.Endpoint("bench", Local(home / "state", routing=routing))  # type: ignore[arg-type]
    ep.deploy(info, "v1")
    ep.deploy(info, "v2")
    return ep


def hits(url: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """Send ``n`` GETs through the router (16 at a time); count the answering versions."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(base_url=url, limits=limits, timeout=10.0, trust_env=False) as client:

        def one(_: int) -> str:
            try:
                response = client.get("/v2/health/live", headers=headers or {})
            except httpx.HTTPError:  # counted, not fatal: the table shows non-2xx and failures
                return "error"
            return response.headers.get(HEADER, "") if response.status_code == 200 else "error"

        with ThreadPoolExecutor(16) as pool:
            return Counter(pool.map(one, range(n)))


def completed(ep: mlshift.Endpoint, version: str) -> int:
    engine = ep.engine
    assert isinstance(engine, LocalEngine)
    stat = f"cluster.bench_{version}.upstream_rq_completed"
    return int(engine.router.stats(f"^{stat}$").get(stat) or 0)


def mirrored(ep: mlshift.Endpoint, n: int) -> int:
    """Copies v2 received while ``n`` requests went to v1 (waits until they stop arriving)."""
    before = completed(ep, "v2")
    seen = hits(ep.url, n)
    if seen != Counter({"v1": n}):
        print(f"mirror run answered {dict(seen)}")
    copies, previous = 0, -1
    deadline = time.monotonic() + 5.0
    while copies != previous and time.monotonic() < deadline:
        previous, copies = copies, completed(ep, "v2") - before
        time.sleep(0.2)
    return copies


def measure(eps: dict[str, mlshift.Endpoint]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {r: {"split": [], "mirror": [], "shift": []} for r in eps}
    for ep in eps.values():
        ep.shift({"v1": 90, "v2": 10})
    for _ in range(REPEATS):
        for routing, ep in eps.items():
            seen = hits(ep.url, N)
            out[routing]["split"].append(100.0 * seen["v2"] / N)
            out[routing]["errors"] = out[routing].get("errors", 0) + seen["error"]
    for routing, ep in eps.items():
        ep.shift({"v1": 100, "v2": 0})
        ep.route_header("x-canary", "yes", "v2")
        out[routing]["header"] = {
            "yes": hits(ep.url, 500, {"x-canary": "yes"})["v2"] / 5.0,
            "other": hits(ep.url, 500, {"x-canary": "yes-but"})["v2"] / 5.0,
            "none": hits(ep.url, 500)["v2"] / 5.0,
        }
        ep.route_header("x-canary", "yes", None)
        ep.mirror("v2", 30.0)
    for _ in range(2):
        for routing, ep in eps.items():
            out[routing]["mirror"].append(100.0 * mirrored(ep, N) / N)
    for ep in eps.values():
        ep.mirror(None)
    for i in range(10):
        for routing, ep in eps.items():
            weights = {"v1": 100, "v2": 0} if i % 2 else {"v1": 0, "v2": 100}
            started = time.perf_counter()
            ep.shift(weights)
            out[routing]["shift"].append(1000 * (time.perf_counter() - started))
    return out


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-routing-") as tmp:
        eps: dict[str, mlshift.Endpoint] = {}
        try:
            for routing in ROUTINGS:
                eps[routing] = setup(Path(tmp) / routing, routing)
            results = measure(eps)
        finally:
            for ep in eps.values():
                ep.delete()
    load_after = os.getloadavg()[0]
    sd = 100.0 * (0.1 * 0.9 / N) ** 0.5
    mirror_sd = 100.0 * (0.3 * 0.7 / N) ** 0.5
    lines = [
        "# Routing benchmark: HTTPRoute beside VirtualService (local mesh)",
        "",
        'Two endpoints in one run, one routed from a VirtualService (`routing="istio"`), one '
        'from an HTTPRoute (`routing="gateway-api"`), each two versions behind its own Envoy; '
        f"measurements interleaved, {os.cpu_count()} CPUs, 1-min load average "
        f"{load_before:.1f} before, {load_after:.1f} after. `benchmarks/routing.py`.",
        "",
        "| measure | goal | VirtualService | HTTPRoute |",
        "|---|---|---:|---:|",
    ]

    def row(label: str, goal: str, cells: list[str]) -> None:
        lines.append(f"| {label} | {goal} | {' | '.join(cells)} |")

    split = [results[r]["split"] for r in ROUTINGS]
    row(
        f"share of v2 at 90/10, {N} requests x {REPEATS}: mean (min-max)",
        "10 ± 3",
        [f"{statistics.mean(s):.2f} ({min(s):.2f}-{max(s):.2f})" for s in split],
    )
    row(
        "max abs error of the split (points)",
        f"≤ 3 (binomial sd {sd:.2f})",
        [f"{max(abs(x - 10) for x in s):.2f}" for s in split],
    )
    row(
        "non-2xx or failed requests during the split",
        "0",
        [str(results[r].get("errors", 0)) for r in ROUTINGS],
    )
    for key, label in (
        ("yes", "header `x-canary: yes` -> v2 (share of v2, %)"),
        ("other", "header `x-canary: yes-but` (share of v2, %)"),
        ("none", "no header (share of v2, %)"),
    ):
        goal = "100" if key == "yes" else "0"
        row(label, goal, [f"{results[r]['header'][key]:.1f}" for r in ROUTINGS])
    mirror = [results[r]["mirror"] for r in ROUTINGS]
    row(
        f"mirror 30 % -> v2: copies per {N} requests x 2, mean (min-max) %",
        f"30 (binomial sd {mirror_sd:.2f})",
        [f"{statistics.mean(m):.2f} ({min(m):.2f}-{max(m):.2f})" for m in mirror],
    )
    shifts = [results[r]["shift"] for r in ROUTINGS]
    row(
        "`ep.shift()` p50 / max ms (10 shifts)",
        "same",
        [f"{np.percentile(s, 50):.1f} / {max(s):.1f}" for s in shifts],
    )
    lines += [
        "",
        "Both routings go through one internal route model (`mlshift.local._xds`) into the same",
        "Envoy configuration, so the numbers differ only by chance: Envoy draws each request's",
        "cluster and each mirror copy at random.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
