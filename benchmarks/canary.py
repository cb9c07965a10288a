"""Canary judge benchmark: false rollbacks of healthy canaries and time to roll back bad ones.

A simulation, no processes: the real ``mlshift._canary.run_canary`` drives a simulated
endpoint whose metrics frames and per-request latencies are drawn at random (requests split
by weight, errors binomial, latencies log-normal). Beside it, in the same run and on the same
kind of draws, a Flagger-style baseline: an absolute limit on the canary's error rate each
interval, ``threshold`` failures in a row roll back (Flagger's time to rollback is
``interval x threshold`` at best).

    .venv/bin/python -m benchmarks canary
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlshift._canary import run_canary
from mlshift._canary_plan import canary_plan
from mlshift._gates import ErrorRate, Latency, SampleRatio

HERE = Path(__file__).resolve().parent
RUNS = 200
RPS = 200.0
BASELINE = 0.005  # the stable version's error rate
TOLERANCE = 0.01
ALPHA = 0.05
STEPS = (5, 25, 50, 100)
LATENCY_CAP = 3000  # per-request latencies drawn per look and version (enough for the test)


@dataclass
class SimEndpoint:
    """An ``EndpointView`` whose traffic is drawn at random; one interval per metrics() call."""

    rng: np.random.Generator
    interval: float
    canary_error: float
    canary_slowdown: float = 1.0
    stable_error: float = BASELINE
    weights: dict[str, int] = field(default_factory=lambda: {"v1": 100, "v2": 0})
    _counts: dict[str, list[float]] = field(default_factory=dict)
    _lat: dict[str, list[np.ndarray[Any, Any]]] = field(default_factory=dict)
    name: str = "sim"
    target: Any = None

    @property
    def versions(self) -> dict[str, Any]:
        return dict.fromkeys(self.weights)

    def status(self) -> None:
        return None

    def shift(self, weights: Any, percent: int | None = None) -> None:
        if isinstance(weights, str):
            assert percent is not None
            weights = {"v1": 100 - percent, weights: percent}
        self.weights = dict(weights)
        self._counts = {v: [0.0, 0.0] for v in self.weights}
        self._lat = {v: [] for v in self.weights}

    def metrics(self, since: float = 0, step: float = 0) -> pd.DataFrame:
        total = self.rng.poisson(RPS * self.interval)
        shares = np.array([self.weights[v] / 100 for v in self.weights])
        split = self.rng.multinomial(total, shares)
        rows = []
        for (version, counts), n in zip(self._counts.items(), split, strict=True):
            rate = self.canary_error if version == "v2" else self.stable_error
            counts[0] += n
            counts[1] += self.rng.binomial(n, rate)
            slow = self.canary_slowdown if version == "v2" else 1.0
            k = min(int(n), LATENCY_CAP)
            self._lat[version].append(self.rng.lognormal(math.log(20.0), 0.3, k) * slow)
            rows.append({"version": version, "requests": counts[0], "errors": counts[1]})
        frame = pd.DataFrame(rows)
        frame["p99_ms"] = math.nan
        return frame

    def journal(self, version: str, since: Any = 0) -> pd.DataFrame:
        parts = self._lat.get(version) or [np.empty(0)]
        return pd.DataFrame({"latency_ms": np.concatenate(parts)[-4 * LATENCY_CAP :]})

    def checkpoint(self) -> float:
        return time.time()  # each look draws one interval's traffic; windows are not read

    def latency_histograms(self, since: Any = 0) -> dict[str, Any]:
        return {}  # the journals always hold latencies here

    def reader(self) -> SimEndpoint:
        return self


def mlshift_run(
    rng: np.random.Generator, interval: float, error: float, threshold: int, stable: float
) -> tuple[str, int]:
    """One simulated mlshift canary: its outcome and how many looks it took."""
    ep = SimEndpoint(rng, interval, error, stable_error=stable)
    gates = [ErrorRate(TOLERANCE), Latency(0.2), SampleRatio()]
    run = run_canary(
        ep,  # type: ignore[arg-type]
        "v2",
        steps=STEPS,
        interval=interval,
        gates=gates,
        threshold=threshold,
        max_inconclusive=3,
        alpha=ALPHA,
        sleep=lambda _: False,
    )
    kind = "promoted" if run.promoted else "timeout" if "timed out" in run.outcome else "rollback"
    return kind, len(run.checks)


def flagger_run(
    rng: np.random.Generator, interval: float, error: float, limit: float, threshold: int
) -> tuple[str, int]:
    """Flagger's rule on the same kind of draws: the canary's own error rate per interval."""
    looks = 0
    for weight in STEPS:
        fails = 0
        while True:
            looks += 1
            n = rng.binomial(rng.poisson(RPS * interval), weight / 100)
            e = rng.binomial(n, error)
            if n and e / n > limit:
                fails += 1
                if fails >= threshold:
                    return "rollback", looks
                continue
            break
    return "promoted", looks


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def main() -> int:
    logging.getLogger("mlshift").setLevel(logging.CRITICAL)  # 1,200 runs' rollbacks are the point
    plan = canary_plan(
        rps=RPS, baseline_error_rate=BASELINE, tolerance=TOLERANCE, steps=STEPS, alpha=ALPHA
    )
    interval = float(math.ceil(plan["seconds"].iloc[0]))  # the first step decides in one look
    rng = np.random.default_rng(2026)
    rows = []
    scenarios = (
        ("healthy (0.5 % = stable)", BASELINE, BASELINE),
        ("bad (3 % vs 0.5 %)", 0.03, BASELINE),
        ("healthy on a bad day (1.5 % = stable)", 0.015, 0.015),
    )
    for label, error, stable in scenarios:
        for name, fn in (
            ("mlshift, threshold 1", lambda e, s: mlshift_run(rng, interval, e, 1, s)),
            ("mlshift, threshold 2", lambda e, s: mlshift_run(rng, interval, e, 2, s)),
            (
                "Flagger-style 1 % limit, threshold 2",
                lambda e, s: flagger_run(rng, interval, e, 0.01, 2),
            ),
        ):
            outcomes = [fn(error, stable) for _ in range(RUNS)]
            kinds = [k for k, _ in outcomes]
            back = [looks for k, looks in outcomes if k == "rollback"]
            rows.append(
                {
                    "canaries": label,
                    "judge": name,
                    "rolled back": f"{kinds.count('rollback') / RUNS:.1%}",
                    "timed out": f"{kinds.count('timeout') / RUNS:.1%}",
                    "promoted": f"{kinds.count('promoted') / RUNS:.1%}",
                    "median time to rollback": (
                        f"{np.median(back) * interval / 60:.1f} min ({np.median(back):.0f} looks)"
                        if back
                        else "-"
                    ),
                }
            )
    table = pd.DataFrame(rows)
    text = [
        "# Canary judge benchmark",
        "",
        f"Simulation (`benchmarks/canary.py`), {RUNS} canaries per row, the real `run_canary`"
        f" and gates (error rate +{TOLERANCE:.0%} points, latency +20 %, sample ratio) at"
        f" alpha = {ALPHA}; {RPS:.0f} requests/s, stable error rate {BASELINE:.1%}, steps"
        f" {', '.join(map(str, STEPS))} %. The interval, {interval:.0f} s, is what"
        f" `mlshift.canary_plan(rps={RPS:.0f}, baseline_error_rate={BASELINE},"
        f" tolerance={TOLERANCE})` asks for at the first step. Flagger's formula for the time"
        f" to rollback of a bad canary is interval x threshold = {2 * interval / 60:.1f} min"
        " (threshold 2).",
        "",
        _markdown(table),
        "",
        "Goal: healthy canaries rolled back at most alpha (5 %) of the time over a whole run."
        " The last rows show why the comparison is relative: on a day the stable version"
        " itself fails 1.5 %, an absolute 1 % limit rolls back a canary that is just as good.",
        "",
    ]
    out = "\n".join(text)
    (HERE / "results" / "canary.md").write_text(out)
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
