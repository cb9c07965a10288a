"""Which Python a base image runs, read from its config the way ko and Jib read a base's.

The builder never unpacks the base, so the base must say which Python it has; the wheels of
the dependency layer are chosen for that Python, not the notebook's. Looked up in order:

1. the label ``io.mlshift.python`` (``"3.11"``), set by mlshift's Dockerfile and by every image
   mlshift builds, and on any base you make yourself;
2. the ``PYTHON_VERSION`` environment variable the official ``python`` images set
   (``python:3.11-slim`` has ``PYTHON_VERSION=3.11.x``).

The interpreter comes from the label ``io.mlshift.python-executable`` (e.g.
``/usr/bin/python3`` on a Debian base), else ``python3``, which the container runtime finds on
the image's ``PATH`` (``/usr/local/bin`` in the official images, ``/usr/bin`` on Debian's).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

from mlshift._exceptions import BuildError

__all__ = [
    "LABEL_PYTHON",
    "LABEL_PYTHON_EXECUTABLE",
    "BasePython",
    "base_python",
    "default_base_image",
]

log = logging.getLogger("mlshift.image")

LABEL_PYTHON = "io.mlshift.python"
LABEL_PYTHON_EXECUTABLE = "io.mlshift.python-executable"
_VERSION = re.compile(r"^3\.(\d+)(?:\.\d+)?(?:[abrc]+\d+)?$")


@dataclass(frozen=True)
class BasePython:
    """The base image's Python: ``version`` (``"3.11"``) and the ``executable`` to run."""

    version: str
    executable: str


def default_base_image() -> str:
    """The official slim Python image of this interpreter's ``major.minor`` (multi-arch).

    Example:
        >>> default_base_image()  # doctest: +SKIP
        'docker.io/library/python:3.11-slim'
    """
    return f"docker.io/library/python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def base_python(config: dict[str, Any], name: str, *, bundle_python: str = "") -> BasePython:
    """Read the base's Python from its image config (labels, then ``PYTHON_VERSION``).

    Args:
        config: the base's image config (the JSON blob its manifest points at).
        name: the base's reference, for error messages.
        bundle_python: the Python the model was saved with; a different ``major.minor`` is
            logged as a warning (pickles may not load across Python versions).

    Raises:
        BuildError: the base does not say which Python it has, or says something unusable.

    Example:
        >>> base_python({"config": {"Env": ["PYTHON_VERSION=3.11.9"]}}, "python:3.11-slim")
        BasePython(version='3.11', executable='python3')
    """
    runtime = config.get("config") or {}
    labels = runtime.get("Labels") or {}
    env = dict(item.split("=", 1) for item in runtime.get("Env") or [] if "=" in item)
    found = labels.get(LABEL_PYTHON) or env.get("PYTHON_VERSION") or ""
    if not found:
        raise BuildError(
            f"base image {name} does not say which Python it has, so mlshift cannot pick"
            f" wheels for it: label it {LABEL_PYTHON}=3.X (and {LABEL_PYTHON_EXECUTABLE}="
            "/path/to/python3 if python3 is not on its PATH), or use an official image such"
            f" as {default_base_image()}"
        )
    match = _VERSION.match(found.strip())
    if match is None:
        raise BuildError(
            f"base image {name} says its Python is {found!r}; mlshift needs a CPython 3.X"
            f" version there (e.g. {LABEL_PYTHON}=3.11)"
        )
    version = f"3.{match.group(1)}"
    executable = str(labels.get(LABEL_PYTHON_EXECUTABLE) or "python3")
    saved = ".".join(bundle_python.split(".")[:2])
    if saved and saved != version:
        log.warning(
            "the model was saved with Python %s but base image %s runs Python %s; if it fails"
            " to load, pass base= an image with Python %s",
            saved,
            name,
            version,
            saved,
        )
    return BasePython(version, executable)
