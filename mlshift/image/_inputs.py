"""What goes into an image besides the base: the bundle and the ``model_server`` sources.

Owns turning ``model_or_bundle`` into a bundle directory (a path, a ``BundleInfo``, or a model
object handed to ``mlshift._bundle.as_bundle``), reading its ``mlshift.json``, and locating the
``model_server`` package of the installed mlshift with the runtime requirements it needs when
the base image lacks it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlshift._exceptions import BuildError, BundleError
from mlshift.image._layers import Entry, tree_entries
from mlshift.image._pip import checked_specs

__all__ = [
    "MODEL_DIR",
    "SERVER_DIR",
    "Bundle",
    "model_server_entries",
    "model_server_requirements",
    "open_bundle",
]

MODEL_DIR = "opt/mlshift/model"
SERVER_DIR = "opt/mlshift/lib"
# What model_server imports at run time (pyproject's "model_server" and "bundles" groups);
# uvloop and httptools because model_server runs uvicorn with loop="uvloop", http="httptools".
_SERVER_RUNTIME = (
    "numpy",
    "pandas",
    "orjson",
    "uvicorn",
    "uvloop",
    "httptools",
    "prometheus-client",
    "packaging",
    "cloudpickle",
    "skops",
)


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its parsed ``mlshift.json``."""

    path: Path
    manifest: dict[str, Any]
    manifest_bytes: bytes

    @property
    def model_file(self) -> str:
        """The model file's name inside the bundle."""
        return str(self.manifest["file"])

    @property
    def sha256(self) -> str:
        """The model file's recorded sha256 (hex)."""
        return str(self.manifest["sha256"])

    @property
    def requirements(self) -> dict[str, str]:
        """pip name -> exact version."""
        return {str(k): str(v) for k, v in (self.manifest.get("requirements") or {}).items()}

    @property
    def python(self) -> str:
        """The Python the model was saved with (``"3.11.7"``)."""
        return str(self.manifest.get("python") or "3.11")

    def entries(self) -> list[Entry]:
        """The bundle's files placed at ``/opt/mlshift/model``."""
        return tree_entries(self.path, MODEL_DIR)


def read_bundle(path: Path) -> Bundle:
    """Parse and sanity-check a bundle directory (the model digest is checked while packing)."""
    meta = path / "mlshift.json"
    if not path.is_dir() or not meta.is_file():
        raise BundleError(
            f"{path} is not a bundle: it needs a mlshift.json next to the model file;"
            " pass a model object or a directory written by mlshift"
        )
    raw = meta.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{meta} is not valid JSON ({exc}); re-create the bundle") from exc
    missing = [k for k in ("file", "sha256", "version") if not manifest.get(k)]
    if missing:
        raise BundleError(f"{meta} lacks {', '.join(missing)}; re-create the bundle")
    model = path / str(manifest["file"])
    if not model.is_file() or model.parent != path:
        raise BundleError(
            f"bundle {path} names model file {manifest['file']!r}, which is not in the"
            " bundle directory; re-create the bundle"
        )
    bundle = Bundle(path, manifest, raw)
    checked_specs(bundle.requirements)  # before anything is built or pushed
    return bundle


@contextmanager
def open_bundle(
    model_or_bundle: object, version: str, *, trust_pickle: bool = False
) -> Iterator[Bundle]:
    """Yield the bundle for a path, a ``BundleInfo`` or a model (bundled into a temp dir,
    with cloudpickle only if ``trust_pickle``)."""
    if isinstance(model_or_bundle, str | Path):
        yield read_bundle(Path(model_or_bundle))
        return
    path = getattr(model_or_bundle, "path", None)
    if isinstance(path, Path) and hasattr(model_or_bundle, "manifest"):
        yield read_bundle(path)
        return
    try:
        bundling = importlib.import_module("mlshift._bundle")
    except ImportError as exc:
        raise BuildError(
            "this mlshift cannot bundle model objects yet; pass a bundle directory"
            " (with mlshift.json) instead"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="mlshift-bundle-") as tmp:
        info = bundling.as_bundle(
            model_or_bundle, version, dest=Path(tmp) / "bundle", trust_pickle=trust_pickle
        )
        yield read_bundle(Path(info.path))


def model_server_entries() -> tuple[list[Entry], str]:
    """The installed ``model_server`` package as layer entries, and its version string."""
    try:
        module = importlib.import_module("model_server")
    except ImportError as exc:
        raise BuildError(
            "the model_server package is not importable here, and the base image lacks it;"
            " reinstall mlshift, or use a base image built from mlshift's Dockerfile"
        ) from exc
    source = Path(module.__file__ or "").parent
    return tree_entries(source, f"{SERVER_DIR}/model_server"), _mlshift_version()


def _mlshift_version() -> str:
    try:
        return importlib.metadata.version("mlshift")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def model_server_requirements() -> dict[str, str]:
    """model_server's runtime packages pinned to the versions installed here."""
    pinned = {}
    for name in _SERVER_RUNTIME:
        try:
            pinned[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned
