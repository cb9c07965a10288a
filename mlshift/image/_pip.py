"""The dependency layer: Python packages a bundle needs that the base image lacks.

Owns the ``pip install --target --platform --python-version --only-binary=:all:`` run that
fetches wheels for the *image's* platform (not this machine's), the pruning of packages the
base already has at the same version, and the cache: the finished layer lives in
``$MLSHIFT_CACHE_DIR`` (default ``~/.cache/mlshift``) under the hash of the requirement set,
Python version, platform and base packages, so every later version with unchanged
dependencies reuses the same blob (and the registry's ``HEAD`` skips it).

When this interpreter has the image's ``major.minor``, the layer also carries bytecode,
compiled hash-based and unchecked (PEP 552: no mtimes, which layers zero; the layer never
changes): a pod's root file system is read-only, so without it every start compiles numpy,
pandas and scikit-learn afresh (three times slower to ready on a busy 2-core machine).
"""

from __future__ import annotations

import compileall
import hashlib
import json
import logging
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from mlshift._exceptions import BuildError
from mlshift.image._layers import LayerBlob, tree_entries, write_layer
from model_server._errors import BundleReadError
from model_server._trust import pinned_requirements

__all__ = [
    "DEPS_DIR",
    "DepsLayer",
    "build_deps_layer",
    "cache_dir",
    "checked_specs",
    "missing_requirements",
    "normalize",
    "parse_packages",
    "platform_tags",
]

log = logging.getLogger("mlshift.image")

DEPS_DIR = "opt/mlshift/deps"
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}
_NO_MATCH = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the"
    r" requirement) ([^\s(]+)"
)


@dataclass(frozen=True)
class DepsLayer:
    """The cached dependency layer and the packages (name -> version) it holds."""

    blob: LayerBlob
    packages: dict[str, str]


def normalize(name: str) -> str:
    """PEP 503 name: ``Scikit_Learn`` -> ``scikit-learn``.

    Example:
        >>> normalize("Scikit_Learn")
        'scikit-learn'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_packages(label: str) -> dict[str, str]:
    """Read the ``io.mlshift.python-packages`` label: ``name==version`` separated by space or ','.

    Example:
        >>> parse_packages("numpy==1.26.4 pandas==2.2.2")
        {'numpy': '1.26.4', 'pandas': '2.2.2'}
    """
    packages = {}
    for item in re.split(r"[,\s]+", label.strip()):
        name, sep, version = item.partition("==")
        if sep and name:
            packages[normalize(name)] = version
    return packages


def missing_requirements(required: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """The requirements the base does not satisfy at exactly the pinned version.

    Example:
        >>> missing_requirements({"numpy": "1.26.4", "six": "1.16.0"}, {"numpy": "1.26.4"})
        {'six': '1.16.0'}
    """
    return {n: v for n, v in sorted(required.items()) if base.get(normalize(n)) != v}


def platform_tags(platform: str) -> list[str]:
    """pip ``--platform`` tags for an image platform such as ``linux/amd64``.

    Example:
        >>> platform_tags("linux/arm64")[:2]
        ['manylinux2014_aarch64', 'manylinux_2_17_aarch64']
    """
    os_name, _, rest = platform.partition("/")
    arch = _ARCH.get(rest.split("/")[0])
    if os_name != "linux" or arch is None:
        raise BuildError(
            f"cannot pick wheels for platform {platform!r}; use linux/amd64 or linux/arm64"
        )
    tags = [f"manylinux2014_{arch}"] + [f"manylinux_2_{minor}_{arch}" for minor in range(17, 40)]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def cache_dir() -> Path:
    """``$MLSHIFT_CACHE_DIR/layers`` (default ``~/.cache/mlshift/layers``), created on use."""
    root = Path(os.environ.get("MLSHIFT_CACHE_DIR") or Path.home() / ".cache" / "mlshift")
    layers = root / "layers"
    layers.mkdir(parents=True, exist_ok=True)
    return layers


def checked_specs(requirements: dict[str, str]) -> list[str]:
    """``name==version`` for pip, each a valid PEP 508 pin (a crafted name is no pip option).

    Raises:
        BuildError: A requirement is not a plain ``name==version``; the message names it.

    Example:
        >>> checked_specs({"six": "1.16.0"})
        ['six==1.16.0']
    """
    try:
        return pinned_requirements(requirements)
    except BundleReadError as exc:
        raise BuildError(str(exc)) from exc


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    log.info("installing image dependencies: %s", " ".join(args[-10:]))
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            "pip did not finish within 30 minutes while fetching wheels for the image;"
            " check the network or your package index"
        ) from exc


def _installed(target: Path) -> dict[str, tuple[str, Path]]:
    found = {}
    for info in sorted(target.glob("*.dist-info")):
        try:
            meta = HeaderParser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        except OSError:
            continue
        found[normalize(meta["Name"])] = (meta["Version"], info)
    return found


def _prune(target: Path, base: dict[str, str]) -> None:
    """Remove packages pip installed that the base already has at the same version."""
    for name, (version, info) in _installed(target).items():
        if base.get(name) != version:
            continue
        record = info / "RECORD"
        lines = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
        for line in lines:
            path = (target / line.split(",", 1)[0]).resolve()
            if path.is_relative_to(target.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
    for root, dirs, files in os.walk(target, topdown=False):  # drop emptied package dirs
        if not dirs and not files and Path(root) != target:
            Path(root).rmdir()


def build_deps_layer(
    requirements: dict[str, str],
    *,
    python: str,
    platform: str,
    base_packages: dict[str, str],
) -> DepsLayer | None:
    """Build (or reuse from the cache) the layer holding ``requirements`` the base lacks.

    Args:
        requirements: pip name -> exact version, as recorded in the bundle.
        python: the image's Python, ``"3.11"`` or ``"3.11.7"``.
        platform: the image platform, ``"linux/amd64"``.
        base_packages: what the base image already has (normalized name -> version).

    Returns:
        ``None`` when nothing is missing, else the layer and the packages it holds.

    Example:
        >>> deps = build_deps_layer({"six": "1.16.0"}, python="3.11", platform="linux/amd64",
        ...                         base_packages={})  # doctest: +SKIP
    """
    missing = missing_requirements(requirements, base_packages)
    if not missing:
        return None
    py = ".".join(python.split(".")[:2])
    tags = platform_tags(platform)
    bytecode = py == f"{sys.version_info.major}.{sys.version_info.minor}"
    key_source = json.dumps(
        {
            "req": missing,
            "py": py,
            "platform": platform,
            "base": sorted(base_packages.items()),
            "pyc": sys.implementation.cache_tag if bytecode else None,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    layers = cache_dir()
    blob_path, meta_path = layers / f"deps-{key}.tar.gz", layers / f"deps-{key}.json"
    if blob_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        log.info("reusing cached dependency layer %s", meta["digest"][:19])
        blob = LayerBlob(meta["digest"], meta["diff_id"], meta["size"], blob_path)
        return DepsLayer(blob, meta["packages"])
    specs = checked_specs(missing)
    with tempfile.TemporaryDirectory(prefix="mlshift-deps-") as tmp:
        target = Path(tmp) / "target"
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(
            "".join(f"{n}=={v}\n" for n, v in sorted(base_packages.items()) if n not in missing),
            encoding="utf-8",
        )
        args = ["--target", str(target), "--python-version", py, "--implementation", "cp"]
        args += [arg for tag in tags for arg in ("--platform", tag)]
        args += ["--only-binary=:all:", "--no-compile", "--no-warn-script-location"]
        done = _pip([*args, "-c", str(constraints), *specs])
        if done.returncode != 0 and "ResolutionImpossible" in done.stderr:
            log.info("the base's package versions conflict; resolving without them")
            shutil.rmtree(target, ignore_errors=True)
            done = _pip([*args, *specs])
        if done.returncode != 0:
            raise _pip_error(done.stderr, specs, platform, py)
        _prune(target, base_packages)
        packages = {name: version for name, (version, _) in _installed(target).items()}
        if bytecode:
            _compile(target)
        else:
            log.info("no bytecode in the image: this is Python %s, the image's %s", sys.version, py)
        blob = write_layer(tree_entries(target, DEPS_DIR, bytecode=bytecode), blob_path)
    meta_path.write_text(
        json.dumps(
            {
                "digest": blob.digest,
                "diff_id": blob.diff_id,
                "size": blob.size,
                "packages": packages,
            }
        ),
        encoding="utf-8",
    )
    return DepsLayer(blob, packages)


def _compile(target: Path) -> None:
    """Compile every module under ``target`` to unchecked hash-based ``.pyc`` (PEP 552)."""
    compileall.compile_dir(
        target,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _pip_error(stderr: str, specs: list[str], platform: str, python: str) -> BuildError:
    match = _NO_MATCH.search(stderr)
    if match:
        return BuildError(
            f"no wheel of {match.group(1)} for {platform} and Python {python} (the image's"
            " platform): pip found none it may install there. Pin a version that ships a"
            " wheel for it (see the project's files on the package index), or build the image"
            " with builder='docker' so pip may compile it"
        )
    tail = "\n".join(stderr.strip().splitlines()[-8:])
    return BuildError(
        f"pip could not fetch {', '.join(specs)} for {platform} / Python {python}:\n{tail}\n"
        "Check the requirement versions in the bundle and your package index settings"
    )
