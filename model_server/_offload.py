"""Work on large bodies, kept off the event loop so health checks answer under load.

Decoding a body of a few megabytes (``orjson.loads``, then numpy conversion) is one long call
into C that holds the GIL: seconds on a busy machine. Run in a thread it would still stop the
event loop for that long, so ``/v2/health/*`` would time out and the mesh would take a healthy
version out of routing. Large bodies are therefore decoded in a helper process (started on the
first one, one at a time); the decoded rows come back as a numpy array or columns, which is
cheap to send. Encoding an answer is fast even for many rows and runs in a thread. Small
bodies, the common case, are decoded in place: a process hop would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["OFFLOAD_BYTES", "Offloader"]

log = logging.getLogger("mlshift.model_server")

T = TypeVar("T")
OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded in the helper process."""


class Offloader:
    """Runs decodes of large bodies in a helper process and encodes of their answers in a thread.

    Example:
        >>> offload = Offloader()  # doctest: +SKIP
        >>> rows = await offload.decode(len(body), decode_v1, body, schema, "m")  # doctest: +SKIP
    """

    def __init__(self, threshold: int = OFFLOAD_BYTES) -> None:
        self.threshold = threshold
        self._process: ProcessPoolExecutor | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlshift-encode")

    async def decode(self, size: int, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)``: in place for ``size`` up to the threshold, else in the helper
        process (in a thread if that process died). ``fn`` must be a module-level function."""
        if size <= self.threshold:
            return fn(*args, **kw)
        call = functools.partial(fn, *args, **kw)
        try:
            return await self._run(self._helper(), call)
        except BrokenProcessPool:
            log.warning("the decoding process died; decoding this body in a thread")
            self._process = None
            return await self._run(self._thread, call)

    async def encode(self, size: int, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)``: in place for ``size`` up to the threshold, else in a thread."""
        if size <= self.threshold:
            return fn(*args, **kw)
        return await self._run(self._thread, functools.partial(fn, *args, **kw))

    def close(self) -> None:
        """Stop the helper process and the thread."""
        if self._process is not None:
            self._process.shutdown(wait=False, cancel_futures=True)
            self._process = None
        self._thread.shutdown(wait=True)

    def _helper(self) -> ProcessPoolExecutor:
        if self._process is None:
            # spawn, not fork: the server runs threads (the model's), which fork would copy
            # in whatever state they are in.
            context = multiprocessing.get_context("spawn")
            self._process = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._process

    @staticmethod
    async def _run(executor: Executor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call)


def _exit_with_parent(parent: int) -> None:
    """In the helper: exit as soon as the server is gone (killed, it cannot say so)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="mlshift-parent-watch", daemon=True).start()
