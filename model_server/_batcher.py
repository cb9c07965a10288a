"""Adaptive batching: coalesce concurrent requests into one predict call, run it off the loop.

Requests queue on the event loop; a single runner takes whatever has queued (up to
``max_batch_size`` rows, optionally waiting ``max_wait_s`` for more), merges requests of the same
layout and the same methods into one model input, calls each method once on it in a worker thread
so the loop keeps accepting and parsing, and hands each caller exactly its own rows of each
output back. Requests asking for different methods never share a call. While one call runs the
next batch forms, which is what makes batching adaptive: an idle server answers a lone request
at once, a busy one amortises the model's per-call cost over every request that arrived
meanwhile. When a call fails, the callers whose rows broke it are found by bisection, and a
group whose halves both fail is answered with the error at once (a broken model is not called
once per caller exactly when it is unhealthy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_server._protocol import Decoded, split_predictions

__all__ = ["Batcher", "ModelCallError"]

log = logging.getLogger("mlshift.model_server")

Outputs = dict[str, np.ndarray[Any, Any]]
PredictFn = Callable[[Sequence[Decoded]], dict[str, Any]]
ObserveFn = Callable[[int, dict[str, Any]], None]


class ModelCallError(Exception):
    """The model raised; ``message`` is what the client sees in the 500 body."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Item:
    decoded: Decoded
    future: asyncio.Future[Outputs] = field(repr=False)


class Batcher:
    """Queue requests and run them through ``predict`` in batches.

    Args:
        predict: Called in the worker thread with a list of same-key ``Decoded`` requests (same
            layout, same methods); returns method -> output for all their rows, in order.
        max_batch_size: Most rows per call (a bigger single request runs alone).
        max_wait_s: How long to wait for more requests once the first is queued (0 = greedy).
        observe: Called on the loop after each successful call with (rows, outputs).

    Example:
        >>> batcher = Batcher(lambda items: run_model(items), max_batch_size=64)  # doctest: +SKIP
        >>> outputs = await batcher.submit(decoded)  # doctest: +SKIP
        >>> outputs["predict"]  # doctest: +SKIP
    """

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.0,
        observe: ObserveFn | None = None,
    ) -> None:
        self._predict = predict
        self._max_rows = max_batch_size
        self._max_wait = max_wait_s
        self._observe = observe
        self._pending: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        # One thread: the model runs one batch at a time while the loop builds the next.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlshift-predict")

    def start(self) -> None:
        """Start the runner task on the running loop."""
        self._wakeup = asyncio.Event()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="mlshift-batcher")

    async def stop(self) -> None:
        """Stop the runner (after the current batch) and the worker thread."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(ModelCallError("the server is shutting down"))
        self._pending.clear()
        self._pool.shutdown(wait=True)

    async def submit(self, decoded: Decoded) -> Outputs:
        """Queue one request and wait for its own rows of each output it asked for."""
        if self._wakeup is None:
            raise RuntimeError("Batcher.start() was not called")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(decoded, future))
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Item]:
        """Take the oldest request and every queued one with the same key that still fits."""
        first = self._pending.popleft()
        batch, rows, key = [first], first.decoded.rows, first.decoded.key
        rest: deque[_Item] = deque()
        while self._pending and rows < self._max_rows:
            item = self._pending.popleft()
            if item.decoded.key == key and rows + item.decoded.rows <= self._max_rows:
                batch.append(item)
                rows += item.decoded.rows
            else:
                rest.append(item)
        rest.extend(self._pending)
        self._pending = rest
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._max_wait > 0:
                deadline = loop.time() + self._max_wait
                while sum(i.decoded.rows for i in self._pending) < self._max_rows:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            batch = self._take()
            await self._call(batch, loop)

    async def _call(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        error = await self._attempt(batch, loop)
        if error is not None:
            await self._isolate(batch, error, loop)

    async def _attempt(
        self, batch: list[_Item], loop: asyncio.AbstractEventLoop
    ) -> Exception | None:
        """Run one call; on success answer every caller, on failure return what was raised."""
        decoded = [item.decoded for item in batch]
        try:
            outputs = await loop.run_in_executor(self._pool, self._predict, decoded)
            parts = split_predictions(outputs, decoded)
        except Exception as exc:
            return exc
        if self._observe is not None:
            try:
                self._observe(sum(d.rows for d in decoded), outputs)
            except Exception:
                log.exception("recording prediction metrics failed; predictions are unaffected")
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)
        return None

    async def _isolate(
        self, batch: list[_Item], error: Exception, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Find the callers whose rows broke a failed call, by bisection.

        Each half is tried; a half that succeeds is answered, one that fails is split again,
        so one bad caller among 64 costs 12 more calls, not 64. When both halves fail the
        failure is not down to one caller's rows (a model failing on every input, or several
        bad callers): the whole group is known bad and every caller in it gets the error,
        so a broken model costs 3 calls per batch instead of one per caller.
        """
        if len(batch) == 1:
            self._fail(batch, error)
            return
        half = len(batch) // 2
        left, right = batch[:half], batch[half:]
        left_error = await self._attempt(left, loop)
        right_error = await self._attempt(right, loop)
        if left_error is not None and right_error is not None:
            self._fail(left, left_error)
            self._fail(right, right_error)
            return
        if left_error is not None:
            await self._isolate(left, left_error, loop)
        if right_error is not None:
            await self._isolate(right, right_error, loop)

    @staticmethod
    def _fail(batch: list[_Item], error: Exception) -> None:
        rows = sum(item.decoded.rows for item in batch)
        log.error("model call failed on %d rows of %d requests", rows, len(batch), exc_info=error)
        message = f"the model raised {type(error).__name__}: {error}"
        for item in batch:
            if not item.future.done():
                item.future.set_exception(ModelCallError(message))
