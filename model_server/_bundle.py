"""The bundle format and its reader: what ``mlshift.json`` holds, checking it, loading the model.

A bundle is a directory with the model file and ``mlshift.json``. This module owns the format
constants (shared with the writer in ``mlshift._bundle``, which imports them from here, never the
reverse), verifies the model file's sha256 *before* deserializing anything, warns by name when the
bundle was made with a newer library than the one installed, and deserializes with the recorded
serializer. What it may execute is decided here, not by the manifest (``model_server._trust``):
skops with the allowlisted types only, cloudpickle only when told to trust pickles, and with a
signing key only a bundle signed with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from model_server._errors import BundleReadError, DigestMismatch
from model_server._trust import check_pickle_trusted, check_signature, skops_trusted_types

__all__ = [
    "FLAVORS",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SERIALIZERS",
    "LoadedBundle",
    "check_requirements",
    "file_sha256",
    "is_older",
    "load_bundle",
    "read_manifest",
    "verify_digest",
]

log = logging.getLogger("mlshift.model_server")

# The newest format this reader reads. A writer records the oldest format that holds its bundle:
# 1, or 2 when the input schema has a column (or array) of dtype "any" (a schema read from the
# fitted model), which readers of format 1 would mishandle.
FORMAT_VERSION = 2
MANIFEST_NAME = "mlshift.json"
FLAVORS = ("sklearn", "xgboost", "lightgbm", "pyfunc")
SERIALIZERS = ("skops", "cloudpickle")
_REQUIRED = ("format_version", "version", "flavor", "serializer", "file", "sha256")


@dataclass(frozen=True)
class LoadedBundle:
    """A verified, deserialized bundle ready to serve.

    Attributes:
        path: The bundle directory.
        manifest: The parsed ``mlshift.json``.
        model: The deserialized model object (anything with ``predict``).
    """

    path: Path
    manifest: dict[str, Any]
    model: Any

    @property
    def version(self) -> str:
        """The version label recorded at bundle time."""
        return str(self.manifest["version"])

    @property
    def name(self) -> str:
        """The model name recorded at bundle time, or ``"model"``."""
        return str(self.manifest.get("name") or "model")

    @property
    def input_schema(self) -> dict[str, Any] | None:
        """The input schema inferred from the sample, or ``None``."""
        schema = self.manifest.get("input_schema")
        return schema if isinstance(schema, dict) else None

    @property
    def output(self) -> dict[str, Any]:
        """The output description: method, task, classes (and buckets for regressors)."""
        out = self.manifest.get("output")
        return out if isinstance(out, dict) else {"method": "predict", "task": "regression"}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Example:
        >>> file_sha256("bundle/model.skops")  # doctest: +SKIP
        '3f1c...'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``mlshift.json`` of a bundle directory (does not touch the model file).

    Raises:
        BundleReadError: The directory or manifest is missing, not JSON, or incomplete.

    Example:
        >>> read_manifest("bundle")["flavor"]  # doctest: +SKIP
        'sklearn'
    """
    path = Path(bundle_dir)
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleReadError(
            f"bundle directory {str(path)!r} does not exist;"
            " pass the directory mlshift.bundle() wrote"
        )
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleReadError(
            f"{str(path)!r} is not a bundle: it has no {MANIFEST_NAME};"
            " create one with mlshift.bundle()"
        ) from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleReadError(
            f"{manifest_path} is not valid JSON ({exc}); re-create the bundle with mlshift.bundle()"
        ) from exc
    if not isinstance(manifest, dict):
        raise BundleReadError(f"{manifest_path} must hold a JSON object; re-create the bundle")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise BundleReadError(
            f"{manifest_path} lacks {', '.join(missing)};"
            " re-create the bundle with mlshift.bundle()"
        )
    fmt = manifest["format_version"]
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise BundleReadError(
            f"{manifest_path} has format_version {fmt!r} but this model_server reads up to"
            f" {FORMAT_VERSION}; upgrade model_server (pip install -U mlshift)"
        )
    if manifest["flavor"] not in FLAVORS:
        raise BundleReadError(
            f"{manifest_path} names flavor {manifest['flavor']!r};"
            f" known flavors: {', '.join(FLAVORS)}"
        )
    if manifest["serializer"] not in SERIALIZERS:
        raise BundleReadError(
            f"{manifest_path} names serializer {manifest['serializer']!r};"
            f" known serializers: {', '.join(SERIALIZERS)}"
        )
    file_name = str(manifest["file"])
    if Path(file_name).name != file_name:
        raise BundleReadError(f"{manifest_path} names model file {file_name!r} outside the bundle")
    return manifest


def verify_digest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Check the model file against the manifest's sha256 and return its path.

    Raises:
        DigestMismatch: The file's sha256 differs from the recorded one.
        BundleReadError: The model file is missing.
    """
    model_path = Path(bundle_dir) / str(manifest["file"])
    if not model_path.is_file():
        raise BundleReadError(
            f"model file {str(model_path)!r} named in {MANIFEST_NAME} is missing;"
            " re-create the bundle with mlshift.bundle()"
        )
    actual = file_sha256(model_path)
    expected = str(manifest["sha256"]).lower()
    if actual != expected:
        raise DigestMismatch(
            f"model file {str(model_path)!r} has sha256 {actual} but {MANIFEST_NAME} records"
            f" {expected}: the file was changed or corrupted after bundling; refusing to load it."
            " Re-create the bundle with mlshift.bundle()",
            expected=expected,
            actual=actual,
        )
    return model_path


def is_older(installed: str, wanted: str) -> bool:
    """Return True when version ``installed`` is older than ``wanted``, by PEP 440 rules.

    Pre-releases sort before their release (``1.5.0rc1`` < ``1.5.0``) and local build labels
    are ignored (``2.3.0+cu121`` is ``2.3.0``: a CUDA build of the same release is not
    older). A version that is not PEP 440 cannot be compared and is never called older.

    Example:
        >>> is_older("1.9.2", "1.10.0"), is_older("2.3.0+cu121", "2.3.0")
        (True, False)
    """
    try:
        have, need = Version(installed), Version(wanted)
    except InvalidVersion as exc:
        log.debug("not comparing versions %r and %r: %s", installed, wanted, exc)
        return False
    return Version(have.public) < Version(need.public)


def check_requirements(manifest: dict[str, Any]) -> list[str]:
    """Warn (by library name) for each requirement that is missing or older than at bundle time.

    Returns the warning messages, so callers and tests can see them too.

    Example:
        >>> check_requirements({"requirements": {"numpy": "1.0.0"}})
        []
    """
    from importlib import metadata

    messages: list[str] = []
    requirements = manifest.get("requirements") or {}
    for dist, wanted in sorted(requirements.items()):
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            messages.append(
                f"bundle needs {dist} {wanted} but {dist} is not installed;"
                f" pip install {dist}=={wanted}"
            )
            continue
        if is_older(installed, str(wanted)):
            messages.append(
                f"bundle was made with {dist} {wanted} but {dist} {installed} is installed here;"
                f" loading may fail or predict differently: pip install {dist}=={wanted}"
            )
    for message in messages:
        log.warning("%s", message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return messages


def _deserialize(model_path: Path, manifest: dict[str, Any], trust_types: Sequence[str]) -> Any:
    serializer = manifest["serializer"]
    # Decided before the file is opened, and never from the manifest's own trusted_types.
    trusted = skops_trusted_types(model_path, trust_types) if serializer == "skops" else []
    try:
        if serializer == "skops":
            import skops.io

            return skops.io.load(model_path, trusted=trusted)
        import cloudpickle

        with open(model_path, "rb") as fh:
            return cloudpickle.load(fh)
    except Exception as exc:
        raise BundleReadError(
            f"cannot deserialize {str(model_path)!r} with {serializer}:"
            f" {type(exc).__name__}: {exc};"
            " install the library versions listed under requirements in mlshift.json"
        ) from exc


def load_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    trust_types: Sequence[str] = (),
    signing_key: bytes | None = None,
) -> LoadedBundle:
    """Read, verify and deserialize a bundle.

    The signature (with ``signing_key``), the sha256 and what the file may execute are all
    checked before any byte of the model is deserialized.

    Args:
        bundle_dir: The bundle directory.
        trust_pickle: Load a cloudpickle bundle (unpickling runs the code it holds).
        trust_types: skops types to trust beyond the known estimator libraries.
        signing_key: When set, only a bundle signed with this HMAC key is loaded.

    Raises:
        BundleReadError: The bundle is unreadable or cannot be deserialized.
        DigestMismatch: The model file does not match the recorded sha256.
        UntrustedBundle: A pickle without ``trust_pickle``, or skops types not allowed.
        SignatureError: ``signing_key`` is set and the signature is missing or wrong.

    Example:
        >>> loaded = load_bundle("bundle")  # doctest: +SKIP
        >>> loaded.model.predict(X[:1])  # doctest: +SKIP
    """
    path = Path(bundle_dir)
    manifest = read_manifest(path)
    check_signature(manifest, signing_key, path)
    model_path = verify_digest(path, manifest)
    if manifest["serializer"] == "cloudpickle":
        check_pickle_trusted(model_path, trust_pickle)
    check_requirements(manifest)
    model = _deserialize(model_path, manifest, trust_types)
    if not callable(getattr(model, "predict", None)):
        raise BundleReadError(f"the object in {str(model_path)!r} has no predict() method")
    log.info(
        "loaded bundle %s (version %s, flavor %s)", path, manifest["version"], manifest["flavor"]
    )
    return LoadedBundle(path=path, manifest=manifest, model=model)
