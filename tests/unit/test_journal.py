"""model_server's request journal: a bounded ring of ids, digests, statuses and answers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from model_server._journal import Journal


def _request(journal: Journal, request_id: str, answer: list[int], status: int = 200) -> None:
    scope = {"headers": [(b"content-type", b"json"), (b"x-request-id", request_id.encode())]}
    if status == 200:
        journal.note(scope, b"body-" + request_id.encode(), {"predict": np.array(answer)})
    journal.record(scope, status, 0.002)


def test_the_ring_keeps_the_newest_entries() -> None:
    journal = Journal(size=3)
    for i in range(5):
        _request(journal, f"r{i}", [i])
    entries = journal.read(b"")["entries"]
    assert [e["id"] for e in entries] == ["r2", "r3", "r4"]
    assert entries[0]["prediction"] == [2]
    assert entries[0]["latency_ms"] == pytest.approx(2.0)
    assert len({e["digest"] for e in entries}) == 3


def test_since_and_limit_select_entries() -> None:
    journal = Journal(size=10)
    _request(journal, "old", [0])
    cut = time.time()
    time.sleep(0.01)
    _request(journal, "new", [1])
    _request(journal, "failed", [], status=500)
    since = journal.read(f"since={cut}".encode())["entries"]
    assert [e["id"] for e in since] == ["new", "failed"]
    assert since[1]["prediction"] is None and since[1]["status"] == 500
    assert [e["id"] for e in journal.read(b"limit=1")["entries"]] == ["failed"]
    with pytest.raises(ValueError, match="since"):
        journal.read(b"since=yesterday")


def test_size_zero_records_nothing_and_the_env_sets_the_size() -> None:
    journal = Journal.from_env({"MLSHIFT_JOURNAL_SIZE": "0"})
    _request(journal, "r", [1])
    assert journal.read(b"")["entries"] == []
    assert Journal.from_env({}).size == 10_000
    with pytest.raises(ValueError, match="MLSHIFT_JOURNAL_SIZE"):
        Journal.from_env({"MLSHIFT_JOURNAL_SIZE": "lots"})


def test_large_answers_are_capped() -> None:
    journal = Journal(size=1)
    _request(journal, "big", list(range(1000)))
    assert len(journal.read(b"")["entries"][0]["prediction"]) == 64
