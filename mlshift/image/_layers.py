"""Reproducible ``tar.gz`` layers, produced as a stream.

Owns the byte layout of every layer mlshift adds: entries sorted by path, parents listed
before children, mtime 0, uid/gid 0 with empty owner names, modes 0644/0755, and a gzip
header fixed by hand (no file name, mtime 0, OS "unknown"), so the same files give the same
digest on any machine with the same zlib. A ``LayerStream`` yields compressed chunks while
computing the layer digest, the ``diff_id`` (sha256 of the uncompressed tar) and, on request,
the sha256 of chosen files: one pass over a 100 MB model file does all three while it
uploads.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlshift._exceptions import BuildError

__all__ = ["Entry", "LayerBlob", "LayerStream", "tree_entries", "write_layer"]

CHUNK = 1 << 20
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_SKIP_NAMES = {"__pycache__", ".DS_Store", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class Entry:
    """One thing in a layer: a file (from disk or bytes), a directory or a symlink.

    ``path`` is the path inside the image without a leading ``/``.
    """

    path: str
    kind: str = "file"  # "file" | "dir" | "symlink"
    source: Path | None = None
    data: bytes | None = None
    mode: int = 0o644
    target: str = ""


@dataclass(frozen=True)
class LayerBlob:
    """A finished layer: its compressed digest and size, and its ``diff_id``."""

    digest: str
    diff_id: str
    size: int
    path: Path | None = None


def tree_entries(src: Path, dest: str, *, bytecode: bool = False) -> list[Entry]:
    """Entries for every file under ``src``, placed under ``dest`` (caches and .pyc skipped).

    With ``bytecode`` the ``__pycache__`` directories are kept (bytecode compiled on purpose
    for the image, as the dependency layer's is).

    Example:
        >>> entries = tree_entries(Path("bundle"), "opt/mlshift/model")  # doctest: +SKIP
    """
    dest = dest.strip("/")
    entries = [Entry(dest, "dir", mode=0o755)]
    skip_dirs = _SKIP_NAMES - {"__pycache__"} if bytecode else _SKIP_NAMES
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        rel_root = Path(root).relative_to(src)
        for name in dirs:
            full = Path(root) / name
            inside = f"{dest}/{(rel_root / name).as_posix()}".replace("/./", "/")
            if full.is_symlink():
                entries.append(Entry(inside, "symlink", target=os.readlink(full)))
            else:
                entries.append(Entry(inside, "dir", mode=0o755))
        for name in sorted(files):
            if name in _SKIP_NAMES or (not bytecode and name.endswith((".pyc", ".pyo"))):
                continue
            full = Path(root) / name
            inside = f"{dest}/{(rel_root / name).as_posix()}".replace("/./", "/")
            if full.is_symlink():
                entries.append(Entry(inside, "symlink", target=os.readlink(full)))
                continue
            executable = bool(full.stat().st_mode & stat.S_IXUSR)
            entries.append(Entry(inside, source=full, mode=0o755 if executable else 0o644))
    return entries


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = entry.path.strip("/")
        if not path or ".." in path.split("/"):
            raise BuildError(f"layer entry {entry.path!r} is not a relative path inside the image")
        parts = path.split("/")
        for i in range(1, len(parts)):
            by_path.setdefault("/".join(parts[:i]), Entry("/".join(parts[:i]), "dir", mode=0o755))
        by_path[path] = Entry(path, entry.kind, entry.source, entry.data, entry.mode, entry.target)
    return [by_path[p] for p in sorted(by_path)]


def _size_of(entry: Entry) -> int:
    if entry.data is not None:
        return len(entry.data)
    return entry.source.stat().st_size if entry.source else 0


def _choose_level(entries: list[Entry]) -> int:
    """zlib level 6, or 1 when the biggest file barely compresses (pickled floats, weights).

    Decided from the content only, so the choice is as reproducible as the bytes.
    """
    files = [e for e in entries if e.kind == "file"]
    if not files:
        return 6
    biggest = max(files, key=_size_of)
    if _size_of(biggest) < 4 * CHUNK:
        return 6
    assert biggest.source is not None or biggest.data is not None
    if biggest.data is not None:
        sample = biggest.data[:CHUNK]
    else:
        with open(biggest.source, "rb") as fh:  # type: ignore[arg-type]
            sample = fh.read(CHUNK)
    ratio = len(zlib.compress(sample, 1)) / max(len(sample), 1)
    return 0 if ratio > 0.9 else 1


class LayerStream:
    """Yield a layer's ``tar.gz`` bytes; digests are ready once the stream is exhausted.

    Args:
        entries: what goes into the layer (parents are added; order does not matter).
        level: zlib level 0-9, or ``None`` to choose from the content.
        hash_paths: in-image paths whose file sha256 to compute on the way (``file_sha256``).
        on_read: called with each count of uncompressed file bytes read (for progress).

    Example:
        >>> stream = LayerStream([Entry("etc/hello", data=b"hi")])
        >>> blob = b"".join(stream); stream.result().digest.startswith("sha256:")
        True
    """

    def __init__(
        self,
        entries: Iterable[Entry],
        *,
        level: int | None = None,
        hash_paths: Iterable[str] = (),
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.entries = _with_parents(entries)
        self.level = _choose_level(self.entries) if level is None else level
        self.hash_paths = {p.strip("/") for p in hash_paths}
        self.on_read = on_read
        self.file_sha256: dict[str, str] = {}
        self.total_input = sum(_size_of(e) for e in self.entries)
        self._result: LayerBlob | None = None

    def result(self) -> LayerBlob:
        """The digest, diff_id and size; only valid after the stream was consumed."""
        if self._result is None:
            raise RuntimeError("the layer stream has not been consumed yet")
        return self._result

    def __iter__(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        diff = hashlib.sha256()
        deflate = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9)
        crc = 0
        raw_size = 0
        size = 0
        pending = bytearray(_GZIP_HEADER)

        def feed(raw: bytes) -> None:
            nonlocal crc, raw_size
            diff.update(raw)
            crc = zlib.crc32(raw, crc)
            raw_size += len(raw)
            pending.extend(deflate.compress(raw))

        def take() -> bytes:
            nonlocal size
            out = bytes(pending)
            pending.clear()
            digest.update(out)
            size += len(out)
            return out

        for entry in self.entries:
            feed(self._header(entry))
            if entry.kind != "file":
                continue
            written = 0
            file_hash = hashlib.sha256() if entry.path in self.hash_paths else None
            for chunk in self._content(entry):
                feed(chunk)
                written += len(chunk)
                if file_hash is not None:
                    file_hash.update(chunk)
                if self.on_read:
                    self.on_read(len(chunk))
                if len(pending) >= CHUNK:
                    yield take()
            if file_hash is not None:
                self.file_sha256[entry.path] = file_hash.hexdigest()
            if written % tarfile.BLOCKSIZE:
                feed(b"\0" * (tarfile.BLOCKSIZE - written % tarfile.BLOCKSIZE))
        end = 2 * tarfile.BLOCKSIZE
        end += (-(raw_size + end)) % tarfile.RECORDSIZE
        feed(b"\0" * end)
        pending.extend(deflate.flush())
        pending.extend(struct.pack("<II", crc, raw_size & 0xFFFFFFFF))
        yield take()
        self._result = LayerBlob(f"sha256:{digest.hexdigest()}", f"sha256:{diff.hexdigest()}", size)

    def _header(self, entry: Entry) -> bytes:
        info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = entry.mode
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
            info.mode = 0o777
        else:
            info.size = _size_of(entry)
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    @staticmethod
    def _content(entry: Entry) -> Iterator[bytes]:
        if entry.data is not None:
            yield entry.data
            return
        assert entry.source is not None
        expected = entry.source.stat().st_size
        seen = 0
        with open(entry.source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                seen += len(chunk)
                yield chunk
        if seen != expected:
            raise BuildError(
                f"{entry.source} changed size while it was being packed ({expected} -> {seen}"
                " bytes); do not write to a bundle while an image is built from it"
            )


def write_layer(entries: Iterable[Entry], dest: Path, *, level: int | None = None) -> LayerBlob:
    """Write a layer to ``dest`` (atomically) and return its digests.

    Example:
        >>> entries = [Entry("etc/hello", data=b"hi")]
        >>> blob = write_layer(entries, Path("/tmp/l.tgz"))  # doctest: +SKIP
    """
    stream = LayerStream(entries, level=level)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        for chunk in stream:
            fh.write(chunk)
    os.replace(tmp, dest)
    blob = stream.result()
    return LayerBlob(blob.digest, blob.diff_id, blob.size, dest)
