"""Liveness of local-mesh process records against real child processes (psutil, no Envoy).

Covers: ``spawn`` records the creation time psutil reports; a running process is alive and a
stopped one is not; a zombie (exited, not yet reaped by a parent that is not mlshift) is not
alive; a record whose creation time differs by more than the tolerance is stale.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil

from mlshift.local._processes import ProcessRecord, alive, read_record, spawn, stop


def test_spawned_record_carries_the_creation_time(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    record = spawn(cmd, log_path=tmp_path / "p.log", record_path=tmp_path / "p.json", port=1)
    try:
        assert record.started is not None
        assert abs(record.started - psutil.Process(record.pid).create_time()) < 0.01
        assert abs(record.started - time.time()) < 30  # epoch seconds, not ticks since boot
        assert read_record(tmp_path / "p.json") == record
        assert alive(record)
        assert not alive(replace(record, started=record.started - 1.0))
    finally:
        stop(record, grace_s=5.0)
    assert not alive(record)


def test_a_zombie_is_not_alive() -> None:
    # Popen outside mlshift: the child exits and stays a zombie until this test reaps it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        proc = psutil.Process(child.pid)
        record = ProcessRecord(child.pid, 1, proc.create_time(), "")
        deadline = time.monotonic() + 10.0
        while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.status() == psutil.STATUS_ZOMBIE
        assert not alive(record)
    finally:
        child.wait()
