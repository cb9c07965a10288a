"""What a bundle may execute, decided by whoever runs model_server, never by the bundle itself.

Three checks, all made before a byte of the model is deserialized:

- **skops types**: a skops file is loaded with only the types this reader allows trusted: those
  of the known estimator libraries (``ALLOWED_MODULES``) and whatever the operator names with
  ``--trust-types``. A ``trusted_types`` list in ``mlshift.json`` is ignored (older readers used
  it; a hand-made manifest could list anything).
- **pickle**: unpickling runs whatever code the file holds, so a cloudpickle bundle is loaded
  only when model_server was started with ``--trust-pickle``. mlshift passes it for a version
  whose deployer said ``trust_pickle=True``.
- **requirements**: the names and versions a manifest asks for end up in pip's argument list
  when an image is built; each must be a plain PEP 508 ``name==version``
  (``pinned_requirements``), so a crafted name cannot become a pip option.
- **signature**: with a key (``MLSHIFT_SIGNING_KEY``, or ``MLSHIFT_SIGNING_KEY_FILE``), only a
  bundle whose manifest carries a valid HMAC-SHA256 of its contents (which include the model
  file's sha256) is loaded. The writer signs with the same key. It proves the bundle was written
  by someone holding the key, not that the model is harmless.

The writer (``mlshift._bundle``) imports ``sign_manifest``, ``signing_key`` and
``disallowed_types`` from here, so both sides apply the same rules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from model_server._errors import BundleReadError

__all__ = [
    "ALLOWED_MODULES",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "SIGNATURE_FIELD",
    "SignatureError",
    "UntrustedBundle",
    "check_pickle_trusted",
    "check_signature",
    "disallowed_types",
    "pinned_requirements",
    "sign_manifest",
    "signing_key",
    "skops_trusted_types",
]

ALLOWED_MODULES = ("sklearn", "xgboost", "lightgbm", "numpy", "scipy")
"""Libraries whose types a skops file may hold without anyone naming them."""
_ALLOWED_TYPES = frozenset({"collections.OrderedDict", "collections.defaultdict"})
"""Standard-library containers estimators keep (LightGBM holds an ``OrderedDict``)."""
KEY_ENV = "MLSHIFT_SIGNING_KEY"
KEY_FILE_ENV = "MLSHIFT_SIGNING_KEY_FILE"
SIGNATURE_FIELD = "signature"
_ALGORITHM = "hmac-sha256"


class UntrustedBundle(BundleReadError):
    """The bundle would execute code (a pickle, or skops types) nobody decided to trust."""


class SignatureError(BundleReadError):
    """A signing key is set and the bundle is unsigned, or signed with another key."""


# ---------------------------------------------------------------- skops


def _allowed(type_name: str, extra: Iterable[str]) -> bool:
    if type_name in _ALLOWED_TYPES or type_name in extra:
        return True
    return any(type_name == m or type_name.startswith(f"{m}.") for m in ALLOWED_MODULES)


def disallowed_types(types: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The types outside the allowlist (known estimator libraries, plus ``extra``).

    Example:
        >>> disallowed_types(["sklearn.tree._tree.Tree", "mymodels.Scaler"])
        ['mymodels.Scaler']
    """
    wanted = set(extra)
    return sorted({t for t in types if not _allowed(t, wanted)})


def skops_trusted_types(model_path: Path, extra: Iterable[str] = ()) -> list[str]:
    """The types to trust when loading ``model_path``: all it holds, once all are allowed.

    Raises:
        UntrustedBundle: The file holds types outside the allowlist; the message names them
            and how to allow them.
    """
    import skops.io

    try:  # reads the file's schema only; nothing is constructed
        found = [str(t) for t in skops.io.get_untrusted_types(file=model_path)]
    except Exception as exc:
        raise BundleReadError(
            f"{str(model_path)!r} is not a readable skops file ({type(exc).__name__}: {exc});"
            " re-create the bundle with mlshift.bundle()"
        ) from exc
    refused = disallowed_types(found, extra)
    if refused:
        names = ", ".join(refused)
        raise UntrustedBundle(
            f"refusing to load {str(model_path)!r}: it holds {names}, outside the types"
            f" model_server trusts (those of {', '.join(ALLOWED_MODULES)}). If you trust"
            f" {'them' if len(refused) > 1 else 'it'}, start model_server with"
            f" --trust-types {','.join(refused)} (or MLSHIFT_TRUST_TYPES={','.join(refused)}),"
            " or bundle the model again with trust_pickle=True"
        )
    return found


# ---------------------------------------------------------------- pickle


def check_pickle_trusted(model_path: Path, trust_pickle: bool) -> None:
    """Refuse a cloudpickle file unless model_server was told to trust pickles.

    Raises:
        UntrustedBundle: ``trust_pickle`` is false; the message says how to opt in.
    """
    if trust_pickle:
        return
    raise UntrustedBundle(
        f"refusing to load {str(model_path)!r}: it is a cloudpickle file, and unpickling runs"
        " whatever code it holds. Load it only if you trust whoever made it: start model_server"
        " with --trust-pickle (or MLSHIFT_TRUST_PICKLE=1); from mlshift, deploy it with"
        " trust_pickle=True, e.g. ep.deploy(model, 'v2', trust_pickle=True)"
    )


# ---------------------------------------------------------------- requirements


def pinned_requirements(requirements: Mapping[str, Any]) -> list[str]:
    """``name==version`` for each requirement, each checked to be a plain PEP 508 pin.

    Raises:
        UntrustedBundle: A name or version is not one (``--index-url=http://x`` is not a
            name; ``1.0 --pre`` is not a version); the message names it.

    Example:
        >>> pinned_requirements({"scikit-learn": "1.5.2", "numpy": "2.1.3"})
        ['numpy==2.1.3', 'scikit-learn==1.5.2']
    """
    specs = []
    for name, version in sorted(requirements.items()):
        spec = f"{name}=={version}"
        problem = ""
        try:
            req = Requirement(spec)
            Version(str(version))
        except (InvalidRequirement, InvalidVersion) as exc:
            problem = str(exc).splitlines()[0]
        else:
            if req.name != name or req.url or req.marker or req.extras:
                problem = "it is more than a name and an exact version"
            elif str(req.specifier) != f"=={version}":
                problem = "its version is not one exact version"
        if problem:
            raise UntrustedBundle(
                f"requirement {spec!r} in mlshift.json is not a valid PEP 508 name==version"
                f" ({problem}); refusing to pass it to pip. Re-create the bundle with"
                " mlshift.bundle(), or fix its requirements"
            )
        specs.append(spec)
    return specs


# ---------------------------------------------------------------- signing


def signing_key(env: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key: ``$MLSHIFT_SIGNING_KEY``, else the file ``$MLSHIFT_SIGNING_KEY_FILE``.

    A trailing newline in the file is not part of the key. ``None`` when neither is set.

    Raises:
        SignatureError: The key file cannot be read, or the key is empty.

    Example:
        >>> signing_key({"MLSHIFT_SIGNING_KEY": "s3cret"})
        b's3cret'
    """
    environ = os.environ if env is None else env
    key: bytes | None = None
    if environ.get(KEY_ENV):
        key = environ[KEY_ENV].encode()
    elif environ.get(KEY_FILE_ENV):
        path = environ[KEY_FILE_ENV]
        try:
            key = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise SignatureError(
                f"cannot read the signing key file {path!r} ({KEY_FILE_ENV}): {exc};"
                " fix the path or unset the variable"
            ) from exc
        if not key:
            raise SignatureError(f"the signing key file {path!r} ({KEY_FILE_ENV}) is empty")
    return key


def _signed_bytes(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_manifest(manifest: Mapping[str, Any], key: bytes) -> dict[str, str]:
    """The ``signature`` entry for ``manifest``: an HMAC-SHA256 of everything else in it.

    The manifest holds the model file's sha256, so the signature covers the model too.

    Example:
        >>> sign_manifest({"sha256": "00"}, b"k")["algorithm"]
        'hmac-sha256'
    """
    digest = hmac.new(key, _signed_bytes(manifest), hashlib.sha256).hexdigest()
    return {"algorithm": _ALGORITHM, "value": digest}


def check_signature(manifest: Mapping[str, Any], key: bytes | None, where: Path) -> None:
    """With a key, require a valid signature; without one, accept any bundle.

    Raises:
        SignatureError: The bundle is unsigned or its signature does not match.
    """
    if key is None:
        return
    found = manifest.get(SIGNATURE_FIELD)
    if not isinstance(found, dict) or not found.get("value"):
        raise SignatureError(
            f"refusing to load {str(where)!r}: it is not signed, and this model_server only"
            f" serves signed bundles ({KEY_ENV} or {KEY_FILE_ENV} is set). Write the bundle"
            f" with the same key in {KEY_ENV} (or {KEY_FILE_ENV}) so it is signed"
        )
    expected = sign_manifest(manifest, key)["value"]
    if found.get("algorithm") != _ALGORITHM or not hmac.compare_digest(
        str(found["value"]), expected
    ):
        raise SignatureError(
            f"refusing to load {str(where)!r}: its signature does not match (it was changed"
            " after signing, or signed with another key). Write the bundle again with the key"
            f" this model_server has in {KEY_ENV} (or {KEY_FILE_ENV})"
        )
