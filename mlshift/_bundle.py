"""The bundle writer: turn a trained model into a self-describing directory model_server can serve.

A bundle is the model file plus ``mlshift.json`` (format described in ``model_server._bundle``,
whose constants and digest check this module reuses; model_server never imports mlshift). The
writer picks the flavor, prefers skops (a format that does not execute code on load) when every
type the model holds comes from a known estimator library (the allowlist model_server applies,
``model_server._trust``), and falls back to cloudpickle only when the caller says
``trust_pickle=True``; it records that decision, signs the manifest when a signing key is set
(``MLSHIFT_SIGNING_KEY`` or ``MLSHIFT_SIGNING_KEY_FILE``), detects the exact library versions
the model's objects come from, infers the input schema (from a sample, else from the fitted
model: ``mlshift._schema``) and records what the model outputs, with the datatypes responses
will carry.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlshift._bundle_info import BundleInfo
from mlshift._exceptions import BundleError, DigestMismatchError
from mlshift._names import check_name
from mlshift._schema import ANY, infer_schema
from model_server._bundle import (
    MANIFEST_NAME,
    file_sha256,
    read_manifest,
    verify_digest,
)
from model_server._errors import BundleReadError, DigestMismatch
from model_server._outputs import derive_outputs, v2_datatype
from model_server._trust import (
    SIGNATURE_FIELD,
    check_signature,
    disallowed_types,
    pinned_requirements,
    sign_manifest,
    signing_key,
)

__all__ = ["BundleInfo", "as_bundle", "bundle", "infer_schema", "read_bundle", "write_bundle"]

log = logging.getLogger("mlshift.bundle")

DEFAULT_ROOT = Path(".mlshift") / "bundles"


# ---------------------------------------------------------------- detection


def _flavor(model: Any) -> str:
    top = type(model).__module__.split(".")[0]
    if top in ("xgboost", "lightgbm"):
        return top
    if top == "sklearn" or _is_sklearn_estimator(model):
        return "sklearn"
    if callable(getattr(model, "predict", None)):
        return "pyfunc"
    raise BundleError(
        f"cannot bundle a {type(model).__name__}: it has no predict() method; pass a fitted"
        " scikit-learn, XGBoost or LightGBM model, or any object with predict(X)"
    )


def _is_sklearn_estimator(model: Any) -> bool:
    if "sklearn" not in sys.modules:
        return False
    from sklearn.base import BaseEstimator

    return isinstance(model, BaseEstimator)


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)


def _local_modules(model: Any) -> list[Any]:
    """Modules of the model's class that are not installed packages (pickled by value)."""
    name = type(model).__module__
    module = sys.modules.get(name)
    if module is None or name == "__main__" or name.split(".")[0] in sys.stdlib_module_names:
        return []
    origin = getattr(module, "__file__", None) or ""
    installed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    if any(origin.startswith(p) for p in installed):
        return []
    return [module]


def detect_requirements(model: Any) -> dict[str, str]:
    """Return ``{distribution: version}`` for every installed package the model's objects use.

    Walks the model the way pickle does and maps each module it meets to its pip distribution.

    Example:
        >>> detect_requirements(RandomForestClassifier().fit(X, y))  # doctest: +SKIP
        {'numpy': '2.1.3', 'scikit-learn': '1.5.2'}
    """
    from importlib import metadata

    import cloudpickle

    modules: set[str] = set()

    class Recorder(cloudpickle.CloudPickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            mod = getattr(obj, "__module__", None) if isinstance(obj, type) else None
            modules.add(str(mod or type(obj).__module__ or ""))
            if callable(obj) and not isinstance(obj, type):
                modules.add(str(getattr(obj, "__module__", "") or ""))
            return super().reducer_override(obj)

    try:
        Recorder(_NullWriter(), protocol=5).dump(model)
    except Exception as exc:
        raise BundleError(
            f"cannot serialize the {type(model).__name__}: {type(exc).__name__}: {exc};"
            " make sure the model holds no open files, locks or connections"
        ) from exc
    owners = metadata.packages_distributions()
    found: dict[str, str] = {}
    for mod in modules:
        top = mod.split(".")[0]
        if not top or top in sys.stdlib_module_names or top == "builtins":
            continue
        for dist in owners.get(top, []):
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return dict(sorted(found.items()))


# ---------------------------------------------------------------- schema and output


def _output(model: Any, flavor: str, sample: Any) -> dict[str, Any]:
    """What the model outputs: task, classes, value buckets and the tensors responses carry.

    ``tensors`` gives each method's v2 datatype and shape, taken from running the sample
    through it (so a float32 regressor is announced as FP32), or derived from the model when
    there is no sample; model_server's metadata announces exactly these.
    """
    import numpy as np

    try:
        classes = getattr(model, "classes_", None)
    except AttributeError:  # a Pipeline whose last step has no classes_
        classes = None
    is_classifier = classes is not None
    if not is_classifier and _is_sklearn_estimator(model):
        from sklearn.base import is_classifier as sk_is_classifier

        is_classifier = bool(sk_is_classifier(model))
    out: dict[str, Any] = {
        "method": "predict",
        "task": "classification" if is_classifier else "regression",
        "classes": np.asarray(classes).tolist() if classes is not None else None,
    }
    if sample is None:
        out["tensors"] = [spec.metadata() for spec in derive_outputs(model, flavor)]
        return out
    try:
        predictions = np.asarray(model.predict(sample))
    except Exception as exc:
        raise BundleError(
            f"model.predict(sample) failed with {type(exc).__name__}: {exc}; pass a sample"
            " the model accepts (rows shaped like its training data)"
        ) from exc
    out["tensors"] = [_tensor("predict", predictions)]
    if callable(getattr(model, "predict_proba", None)):
        try:
            out["tensors"].append(_tensor("predict_proba", np.asarray(model.predict_proba(sample))))
        except Exception as exc:  # it would fail when served too: do not announce it
            log.info("predict_proba(sample) failed (%s); not offering it as an output", exc)
    if not is_classifier and predictions.dtype.kind in "fiu":
        values = predictions[np.isfinite(predictions)].astype(float)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if hi > lo:  # spread buckets around what the sample predicts, half a range either side
            pad = (hi - lo) / 2
            edges = np.linspace(lo - pad, hi + pad, 12)
            out["buckets"] = sorted({float(f"{e:.6g}") for e in edges})
    return out


def _format_version(schema: dict[str, Any] | None) -> int:
    """1, unless the schema holds dtype ``any``, which only format-2 readers take."""
    if not schema:
        return 1
    dtypes = [schema.get("dtype"), *(c.get("dtype") for c in schema.get("columns") or [])]
    return 2 if ANY in dtypes else 1


def _tensor(name: str, values: Any) -> dict[str, Any]:
    shape = [-1, *values.shape[1:]] if values.ndim else [-1]
    return {"name": name, "datatype": v2_datatype(values.dtype), "shape": shape}


# ---------------------------------------------------------------- serialization


def _stable_zip(data: bytes) -> bytes:
    """Make a skops file byte-for-byte repeatable, so the same model gives the same sha256.

    skops names objects and array files after ``id()`` and stamps zip entries with the
    current time; both change between runs. Ids are renumbered in order of first appearance
    in the schema and entry times fixed. The caller loads the result back before using it.
    """
    import re
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as src:
        entries = {item.filename: src.read(item) for item in src.infolist()}
    schema = entries.get("schema.json", b"").decode()
    ids: dict[str, str] = {}
    for match in re.finditer(r'"__id__": (\d+)|"(\d+)\.npy"', schema):
        ids.setdefault(match.group(1) or match.group(2), str(len(ids) + 1))
    schema = re.sub(r"\b\d+\b", lambda m: ids.get(m.group(0), m.group(0)), schema)
    entries["schema.json"] = schema.encode()
    renamed = {}
    for name, content in entries.items():
        stem, dot, ext = name.partition(".")
        renamed[f"{ids.get(stem, stem)}{dot}{ext}"] = content
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(renamed):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, renamed[name])
    return out.getvalue()


def _pickle_refusal(model: Any, why: str) -> BundleError:
    cls = type(model)
    return BundleError(
        f"{cls.__module__}.{cls.__qualname__} can only be bundled with cloudpickle ({why}),"
        " and loading a pickle runs whatever code it holds, so model_server refuses it unless"
        " told to trust it. If you wrote or trust this model's code, say so:"
        " ep.deploy(model, 'v2', trust_pickle=True) (or mlshift.bundle(model, 'v2',"
        " trust_pickle=True); mlshift deploy ... --trust-pickle on the command line)"
    )


def _serialize(
    model: Any, flavor: str, workdir: Path, *, trust_pickle: bool
) -> tuple[str, str, list[str]]:
    why = "it is not a scikit-learn, XGBoost or LightGBM model"
    if flavor != "pyfunc":
        try:
            import skops.io

            data = _stable_zip(skops.io.dumps(model))
            found = [str(t) for t in skops.io.get_untrusted_types(data=data)]
            outside = disallowed_types(found)
            if not outside:
                skops.io.loads(data, trusted=found)  # prove it reads back before choosing it
                (workdir / "model.skops").write_bytes(data)
                # Older readers trusted this list; model_server now decides from its allowlist.
                return "model.skops", "skops", found
            why = f"it holds {', '.join(outside)}, outside the types model_server trusts"
        except Exception as exc:
            why = f"skops cannot store it: {type(exc).__name__}: {exc}"
        log.info("not storing this %s with skops: %s", type(model).__name__, why)
    if not trust_pickle:
        raise _pickle_refusal(model, why)
    import cloudpickle

    local = _local_modules(model)
    for module in local:  # classes defined outside installed packages travel with the model
        cloudpickle.register_pickle_by_value(module)
    try:
        buffer = io.BytesIO()
        cloudpickle.dump(model, buffer, protocol=5)
    except Exception as exc:
        raise BundleError(
            f"cannot pickle the {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for module in local:
            cloudpickle.unregister_pickle_by_value(module)
    (workdir / "model.pkl").write_bytes(buffer.getvalue())
    return "model.pkl", "cloudpickle", []


def _signing_key() -> bytes | None:
    try:
        return signing_key()
    except BundleReadError as exc:
        raise BundleError(str(exc)) from exc


def _info(path: Path, manifest: dict[str, Any]) -> BundleInfo:
    try:  # the names go to pip when an image is built: plain name==version only
        pinned_requirements(manifest.get("requirements") or {})
    except BundleReadError as exc:
        raise BundleError(str(exc)) from exc
    return BundleInfo(
        path=path,
        sha256=str(manifest["sha256"]),
        flavor=str(manifest["flavor"]),
        serializer=str(manifest["serializer"]),
        requirements={str(k): str(v) for k, v in (manifest.get("requirements") or {}).items()},
        manifest=manifest,
    )


def _replace_dir(tmp: Path, dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST_NAME).exists()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(
                f"{str(dest)!r} exists and is not a bundle; pick another path or remove it"
            )
        shutil.rmtree(dest)
    os.replace(tmp, dest)


# ---------------------------------------------------------------- public API


def write_bundle(
    model: Any,
    version: str,
    *,
    sample: Any = None,
    dest: str | os.PathLike[str] | None = None,
    name: str | None = None,
    trust_pickle: bool = False,
) -> BundleInfo:
    """Write ``model`` as a bundle directory and return what was written.

    Args:
        model: A fitted scikit-learn estimator or pipeline, XGBoost or LightGBM model (through
            their scikit-learn API), or any object with ``predict``.
        version: The version label (a DNS-1123 label such as ``"v2"``).
        sample: A few input rows (DataFrame or array); gives the input schema the server
            validates against, and is run through ``predict`` once as a check. Without it
            the schema comes from what the fitted model remembers (feature names, width).
        dest: Bundle directory; default ``.mlshift/bundles/<name>-<version>``. An existing
            bundle there is replaced.
        name: Model name recorded in the manifest (the server's URL name).
        trust_pickle: Allow cloudpickle for a model skops cannot store safely (a class of
            your own): loading it runs its code, so this records that you trust it.

    Raises:
        InvalidNameError: ``version`` or ``name`` is not a DNS-1123 label.
        BundleError: The model cannot be serialized, does not accept its sample, or needs
            cloudpickle and ``trust_pickle`` is false.

    Example:
        >>> info = write_bundle(model, "v1", sample=X_test[:5])  # doctest: +SKIP
        >>> info.flavor, info.serializer  # doctest: +SKIP
        ('sklearn', 'skops')
    """
    check_name(version, kind="version")
    if name is not None:
        check_name(name, kind="model name")
    flavor = _flavor(model)
    if flavor == "pyfunc" and not trust_pickle:  # before any work: it can only be pickled
        raise _pickle_refusal(model, "it is not a scikit-learn, XGBoost or LightGBM model")
    key = _signing_key()
    target = Path(dest) if dest is not None else DEFAULT_ROOT / f"{name or 'model'}-{version}"
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = infer_schema(sample, model)
    output = _output(model, flavor, sample)
    requirements = detect_requirements(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        file_name, serializer, trusted = _serialize(model, flavor, tmp, trust_pickle=trust_pickle)
        manifest: dict[str, Any] = {
            "format_version": _format_version(schema),
            "name": name,
            "version": version,
            "flavor": flavor,
            "serializer": serializer,
            "file": file_name,
            "sha256": file_sha256(tmp / file_name),
            "python": platform.python_version(),
            "requirements": requirements,
            "input_schema": schema,
            "output": output,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if trusted:
            manifest["trusted_types"] = trusted
        if serializer == "cloudpickle":
            manifest["trust_pickle"] = True  # the caller's decision, on record
        if key is not None:
            manifest[SIGNATURE_FIELD] = sign_manifest(manifest, key)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, target)
    log.info("bundled %s %s as %s (%s, %s)", name or "model", version, target, flavor, serializer)
    return _info(target, manifest)


def bundle(
    model: Any,
    version: str,
    *,
    sample: Any = None,
    path: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
) -> BundleInfo:
    """Bundle a trained model for serving: the model file plus ``mlshift.json``.

    A model of your own class needs ``trust_pickle=True`` (see ``write_bundle``).

    Example:
        >>> info = mlshift.bundle(model, "v2", sample=X_test[:5])  # doctest: +SKIP
        >>> info.manifest["input_schema"]["kind"]  # doctest: +SKIP
        'dataframe'
    """
    return write_bundle(model, version, sample=sample, dest=path, trust_pickle=trust_pickle)


def read_bundle(path: str | os.PathLike[str]) -> BundleInfo:
    """Read a bundle directory and verify its digest (without deserializing the model).

    With a signing key set (``MLSHIFT_SIGNING_KEY`` or ``MLSHIFT_SIGNING_KEY_FILE``) the
    signature is checked too, as model_server will.

    Raises:
        DigestMismatchError: The model file was changed after bundling.
        BundleError: The directory is not a readable bundle, or not signed with the key.

    Example:
        >>> read_bundle(".mlshift/bundles/churn-v1").flavor  # doctest: +SKIP
        'sklearn'
    """
    bundle_dir = Path(path).absolute()
    try:
        manifest = read_manifest(bundle_dir)
        check_signature(manifest, signing_key(), bundle_dir)
        verify_digest(bundle_dir, manifest)
    except DigestMismatch as exc:
        raise DigestMismatchError(str(exc)) from exc
    except BundleReadError as exc:
        raise BundleError(str(exc)) from exc
    return _info(bundle_dir, manifest)


def as_bundle(
    model_or_path: Any,
    version: str,
    *,
    sample: Any = None,
    dest: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
) -> BundleInfo:
    """Return a verified bundle for a model, an existing bundle directory, or a ``BundleInfo``.

    Existing bundles are read and verified, never re-written; ``trust_pickle`` applies to a
    model that is bundled here (see ``write_bundle``).

    Example:
        >>> as_bundle(".mlshift/bundles/churn-v1", "v1").sha256  # doctest: +SKIP
        '3f1c...'
    """
    if isinstance(model_or_path, BundleInfo):
        info = read_bundle(model_or_path.path)
    elif isinstance(model_or_path, str | os.PathLike):
        candidate = Path(model_or_path)
        if not (candidate / MANIFEST_NAME).is_file():
            raise BundleError(
                f"{str(candidate)!r} is not a bundle directory (no {MANIFEST_NAME});"
                " pass a model object or a directory written by mlshift.bundle()"
            )
        info = read_bundle(candidate)
    else:
        return write_bundle(
            model_or_path, version, sample=sample, dest=dest, trust_pickle=trust_pickle
        )
    if info.version != version:
        log.info(
            "bundle %s was made as %r and is used as version %r", info.path, info.version, version
        )
    return info
