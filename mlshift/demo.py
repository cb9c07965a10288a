"""``make demo``: the quickstart on the local target, start to finish, in about a minute.

Trains two scikit-learn models, deploys v1 and v2 behind a real Envoy on this machine,
sends traffic, shifts 100/0 -> 90/10 -> 50/50 -> promotes v2, printing what each version
served after every step, then deletes the endpoint so nothing keeps running.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlshift._client import TrafficRun
    from mlshift._view import EndpointView

__all__ = ["main"]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _table(ep: EndpointView, run: TrafficRun) -> str:
    import pandas as pd

    summary = run.summary()
    metrics = ep.metrics(since="5s", step="1s")
    if not metrics.empty:
        latest = metrics.groupby("version")[["rps", "error_rate", "p50_ms", "p99_ms"]].mean()
        summary = summary.join(latest.add_prefix("envoy_"), how="left")
    with pd.option_context(
        "display.width", 200, "display.max_columns", None, "display.precision", 2
    ):
        return str(summary)


def main(argv: list[str] | None = None) -> int:
    """Run the quickstart; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mlshift").setLevel(logging.INFO)
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    import mlshift

    started = time.perf_counter()
    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    v1_model = LogisticRegression(max_iter=500).fit(X, y)
    v2_model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(X, y)

    ep = mlshift.endpoint("churn-demo")
    try:
        _say("== deploy v1 (takes 100 %) and v2 (starts at 0 %)")
        ep.deploy(v1_model, "v1", sample=X[:5])
        ep.deploy(v2_model, "v2", sample=X[:5])
        _say(f"router at {ep.url}")
        _say(str(ep.predict(X[:3])))
        splits: list[dict[str, int] | None] = [
            {"v1": 100, "v2": 0},
            {"v1": 90, "v2": 10},
            {"v1": 50, "v2": 50},
            None,  # promote v2
        ]
        for split in splits:
            if split is None:
                _say("\n== promote v2")
                ep.promote("v2")
            else:
                _say(f"\n== shift {split}")
                ep.shift(split)
            run = ep.send(X, rps=100, duration="5s").wait()
            _say(_table(ep, run))
        _say("\n== rollback (back to 50/50)")
        ep.rollback()
        _say(str(ep.status()))
    finally:
        ep.delete()
        _say(
            f"\ndeleted the endpoint; nothing left running ({time.perf_counter() - started:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
