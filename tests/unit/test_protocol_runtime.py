"""The server's pure runtime pieces: adaptive batching, settings from flags/env, metric families.

Batching keeps requests for different methods (predict, predict_proba, both) in separate calls.
A failed batch is bisected: one bad caller costs a dozen calls, a broken model three.

The batcher runs on pytest-asyncio's loop with a plain function as the model; no sockets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from model_server._batcher import Batcher, ModelCallError
from model_server._metrics import ServerMetrics
from model_server._protocol import Decoded, InputSchema, to_model_input
from model_server._settings import Settings, parse_settings

SCHEMA = InputSchema.from_manifest({"kind": "array", "shape": [None, 1], "dtype": "float64"})


def _rows(*values: float, methods: tuple[str, ...] = ("predict",)) -> Decoded:
    return Decoded(rows=len(values), methods=methods, array=np.array([[v] for v in values]))


class SlowEcho:
    """Records batch sizes; sleeps so that requests pile up while it works."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[Decoded]) -> Any:
        X = to_model_input(items, SCHEMA)
        with self.lock:
            self.calls.append(len(X))
        time.sleep(0.02)
        if (X < 0).any():
            raise ValueError("negative")
        return dict.fromkeys(items[0].methods, X[:, 0] * 10)


async def test_concurrent_requests_are_coalesced_and_split_back() -> None:
    model = SlowEcho()
    observed: list[int] = []
    batcher = Batcher(model, max_batch_size=16, observe=lambda rows, _: observed.append(rows))
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(_rows(i, i + 0.5)) for i in range(40)))
    finally:
        await batcher.stop()
    for i, result in enumerate(results):
        assert result["predict"].tolist() == [i * 10, (i + 0.5) * 10]
    assert sum(model.calls) == 80
    assert max(model.calls) <= 16
    assert len(model.calls) < 40  # coalesced
    assert observed == model.calls


async def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    batcher = Batcher(SlowEcho(), max_batch_size=64)
    batcher.start()
    try:
        outcomes = await asyncio.gather(
            batcher.submit(_rows(1)),
            batcher.submit(_rows(-1)),
            batcher.submit(_rows(2)),
            return_exceptions=True,
        )
    finally:
        await batcher.stop()
    assert outcomes[0]["predict"].tolist() == [10.0]  # type: ignore[index]
    assert isinstance(outcomes[1], ModelCallError)
    assert "ValueError: negative" in outcomes[1].message
    assert outcomes[2]["predict"].tolist() == [20.0]  # type: ignore[index]


async def test_max_wait_collects_a_batch_and_oversized_requests_run_alone() -> None:
    model = SlowEcho()
    batcher = Batcher(model, max_batch_size=4, max_wait_s=0.05)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(_rows(1)))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(_rows(2)))
        big = asyncio.ensure_future(batcher.submit(_rows(*range(10))))
        await asyncio.gather(first, second, big)
    finally:
        await batcher.stop()
    assert model.calls[0] == 2  # the wait let the second request join the first
    assert 10 in model.calls


async def test_requests_for_different_methods_never_share_a_call() -> None:
    model = SlowEcho()
    method_sets: list[set[tuple[str, ...]]] = []  # per model call: the method tuples in it

    def predict(items: Sequence[Decoded]) -> Any:
        method_sets.append({it.methods for it in items})
        return model(items)

    batcher = Batcher(predict, max_batch_size=64)
    batcher.start()
    asked = [("predict",), ("predict", "predict_proba"), ("predict_proba",)] * 6
    try:
        results = await asyncio.gather(
            *(batcher.submit(_rows(i, methods=m)) for i, m in enumerate(asked))
        )
    finally:
        await batcher.stop()
    for i, (methods, result) in enumerate(zip(asked, results, strict=True)):
        assert tuple(result) == methods  # exactly the outputs asked for, in that order
        assert all(r.tolist() == [i * 10] for r in result.values())
    assert all(len(s) == 1 for s in method_sets)  # one method set per model call
    assert len(method_sets) < len(asked)  # and same-method requests still coalesce


def test_settings_flags_then_env_then_defaults() -> None:
    env = {"MLSHIFT_MODEL_DIR": "/b", "PORT": "9001", "MLSHIFT_MAX_BATCH_SIZE": "8"}
    settings = parse_settings(["--max-batch-wait-ms", "2.5", "--name", "churn"], env=env)
    assert settings == Settings(
        model_dir="/b", port=9001, name="churn", max_batch_size=8, max_batch_wait_ms=2.5
    )
    assert settings.host == "0.0.0.0"
    assert parse_settings(["--model-dir", "x", "--port", "1"], env=env).port == 1
    assert parse_settings(["--model-dir", "x"], env={}).grace_period_s == 25.0


@pytest.mark.parametrize(
    "argv", [[], ["--model-dir", "x", "--max-batch-size", "0"], ["--model-dir", "x", "--port", "p"]]
)
def test_settings_refusals_exit_with_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(argv, env={})


def test_metric_families_for_each_task() -> None:
    classifier = ServerMetrics("churn", "v1", task="classification")
    classifier.observe_predictions(np.array([[0.9, 0.1], [0.2, 0.8]]), classes=["no", "yes"])
    classifier.observe_predictions(np.array(["yes"]))
    text = classifier.render().decode()
    assert 'mlshift_predictions_total{class="yes",model="churn",version="v1"} 2.0' in text
    assert 'mlshift_predictions_total{class="no",model="churn",version="v1"} 1.0' in text
    assert "mlshift_prediction_value" not in text
    regressor = ServerMetrics("price", "v2", value_buckets=[10, 0, 5])
    regressor.observe_predictions(np.array([1.0, 7.0]))
    text = regressor.render().decode()
    assert 'mlshift_prediction_value_bucket{le="5.0",model="price",version="v2"} 1.0' in text
    assert 'mlshift_prediction_value_sum{model="price",version="v2"} 8.0' in text
    assert "mlshift_predictions_total" not in text


class CountingModel:
    """Counts predict calls; fails on any batch that holds a negative row, or always."""

    def __init__(self, *, always_fails: bool = False) -> None:
        self.calls = 0
        self.always_fails = always_fails

    def __call__(self, items: Sequence[Decoded]) -> Any:
        X = to_model_input(items, SCHEMA)
        self.calls += 1
        if self.always_fails:
            raise RuntimeError("the model is broken")
        if (X < 0).any():
            raise ValueError("negative")
        return dict.fromkeys(items[0].methods, X[:, 0] * 10)


async def _one_batch_of_64(model: CountingModel, values: list[float]) -> list[Any]:
    # A long wait with room for exactly 64 rows: the 64 requests make one batch.
    batcher = Batcher(model, max_batch_size=64, max_wait_s=5.0)
    batcher.start()
    try:
        return await asyncio.gather(
            *(batcher.submit(_rows(v)) for v in values), return_exceptions=True
        )
    finally:
        await batcher.stop()


@pytest.mark.parametrize(
    ("case", "bad", "max_calls"),
    [
        ("all good", set(), 1),
        ("one bad item", {37}, 1 + 2 * 6),  # the batch, then both halves at each of 6 levels
        ("all bad", set(range(64)), 3),  # the batch and its two halves: known bad, stop
    ],
)
async def test_a_failed_batch_is_bisected_and_stops_once_known_bad(
    case: str, bad: set[int], max_calls: int
) -> None:
    model = CountingModel()
    values = [-1.0 - i if i in bad else float(i) for i in range(64)]
    outcomes = await _one_batch_of_64(model, values)
    assert model.calls <= max_calls, case
    for i, outcome in enumerate(outcomes):
        if i in bad:
            assert isinstance(outcome, ModelCallError), (case, i)
            assert "ValueError: negative" in outcome.message
        else:
            assert outcome["predict"].tolist() == [i * 10], (case, i)


async def test_a_model_that_fails_on_every_input_is_called_three_times_per_batch() -> None:
    model = CountingModel(always_fails=True)
    outcomes = await _one_batch_of_64(model, [float(i) for i in range(64)])
    assert model.calls == 3  # not 65: the batch, its halves, then every caller gets the 500
    assert all(isinstance(o, ModelCallError) for o in outcomes)
    assert all("RuntimeError: the model is broken" in o.message for o in outcomes)  # type: ignore[union-attr]
