"""model_server's request journal: a bounded ring of ids, digests, statuses and answers."""

from __future__ import annotations

import gc
import hashlib
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


def test_a_full_journal_gives_the_garbage_collector_nothing_to_walk() -> None:
    journal = Journal(size=100)
    batch = np.arange(32)
    for i in range(200):
        scope = {"headers": [(b"x-request-id", f"r{i}".encode())]}
        journal.note(scope, b"body", {"predict": batch[i % 32 : i % 32 + 1]})
        journal.record(scope, 200, 0.001)
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is
    assert not any(gc.is_tracked(entry) for entry in journal.entries)
    assert journal.read(b"limit=1")["entries"][0]["prediction"] == [199 % 32]


def test_digests_match_the_body_whether_taken_at_once_or_when_read() -> None:
    journal = Journal(size=2)
    small, large = b"x" * 100, b"y" * 100_000
    for body in (small, large):
        scope: dict[str, object] = {"headers": []}
        journal.note(scope, body, {"predict": np.zeros(10_000)})
        journal.record(scope, 200, 0.001)
    assert [e["digest"] for e in journal.read(b"")["entries"]] == [
        hashlib.sha256(b).hexdigest()[:16] for b in (small, large)
    ]
    kept = journal.entries[1]
    assert isinstance(kept[4], str)  # the large body itself is not kept
    assert kept[5].base is None or kept[5].base.nbytes <= 64 * 8  # nor the 10,000 values
