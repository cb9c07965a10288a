"""How the local engine replaces its files: atomically, on the real file system.

Covers: ``replace_file`` puts new contents in place of an existing file (on Linux by exchanging
the two files, then removing the old one) or creates a missing one, leaves no temp file behind,
and a reader running meanwhile only ever sees a whole old or a whole new file, never none.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mlshift.local._files import replace_file


def test_replace_file_swaps_in_new_contents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "state.json", tmp_path / "state.json.tmp"
    replace_file(tmp, dest, b"first")  # no file yet: created
    assert dest.read_bytes() == b"first"
    replace_file(tmp, dest, b"second")
    assert dest.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_reader_sees_a_whole_file_at_every_moment(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "state.json", tmp_path / "state.json.tmp"
    contents = [bytes([65 + i % 26]) * (1000 + 7 * i) for i in range(300)]
    replace_file(tmp, dest, contents[0])
    seen: list[bytes | None] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(dest.read_bytes())
            except FileNotFoundError:
                seen.append(None)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for data in contents[1:]:
            replace_file(tmp, dest, data)
    finally:
        done.set()
        reader.join()
    assert seen
    assert None not in seen
    assert set(seen) <= set(contents)
    assert dest.read_bytes() == contents[-1]
