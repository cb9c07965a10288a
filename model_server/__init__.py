"""model_server: the serving runtime inside every mlshift image and behind every local version.

It reads a bundle (``mlshift.json`` + model file), verifies its sha256, and serves it over the
Open Inference Protocol v2 and KServe v1 with adaptive batching and Prometheus metrics. It never
imports ``mlshift``, so images carry only what serving needs. Names are imported lazily, so the
bundle writer can read the format constants without pulling in numpy or uvicorn.

Example:
    $ python -m model_server --model-dir ./bundle --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_server._app import ModelApp, create_app
    from model_server._bundle import LoadedBundle, load_bundle, read_manifest
    from model_server._errors import (
        BundleReadError,
        DigestMismatch,
        InvalidInput,
        ModelServerError,
    )
    from model_server._settings import Settings, parse_settings

__all__ = [
    "BundleReadError",
    "DigestMismatch",
    "InvalidInput",
    "LoadedBundle",
    "ModelApp",
    "ModelServerError",
    "Settings",
    "create_app",
    "load_bundle",
    "parse_settings",
    "read_manifest",
]
__version__ = "0.1.0"

_HOME = {
    "ModelApp": "_app",
    "create_app": "_app",
    "LoadedBundle": "_bundle",
    "load_bundle": "_bundle",
    "read_manifest": "_bundle",
    "BundleReadError": "_errors",
    "DigestMismatch": "_errors",
    "InvalidInput": "_errors",
    "ModelServerError": "_errors",
    "Settings": "_settings",
    "parse_settings": "_settings",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'model_server' has no attribute {name!r}")
    return getattr(importlib.import_module(f"model_server.{home}"), name)
