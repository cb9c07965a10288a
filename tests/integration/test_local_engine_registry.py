"""The local target's engine registry: one engine per endpoint and process, while it is used.

Covers: ``Endpoint`` objects of one endpoint share one engine; once no ``Endpoint`` holds it,
the engine is closed (its 1 Hz sampler thread stops) and forgotten; a closed engine is never
handed out again. No Envoy or model server is started.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path

import mlshift
from mlshift.local import Local


def _samplers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "mlshift-sampler")


def test_engine_is_closed_once_no_endpoint_uses_it(tmp_path: Path) -> None:
    target = Local(tmp_path / "home")
    before = _samplers()
    first = mlshift.Endpoint("churn", target)
    second = first.reader()
    engine = first.engine
    assert second.engine is engine
    engine.sampling.start()  # type: ignore[attr-defined]
    assert _samplers() == before + 1
    gone = weakref.ref(engine)
    del first, second, engine
    # The sampler thread may hold the engine for the length of one tick; collect again until
    # it let go (bounded).
    deadline = time.monotonic() + 5.0
    gc.collect()
    while gone() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    assert gone() is None
    while _samplers() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _samplers() == before
    assert mlshift.Endpoint("churn", target).engine is not None  # a new one when asked again


def test_a_closed_engine_is_not_handed_out_again(tmp_path: Path) -> None:
    target = Local(tmp_path / "home")
    engine = target.engine("churn")
    assert target.engine("churn") is engine
    engine.close()
    assert target.engine("churn") is not engine
