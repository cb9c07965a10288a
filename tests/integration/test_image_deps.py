"""The dependency layer and the Docker builder choice, with real pip and real registries.

pip runs for real against a local ``--find-links`` directory of wheels made here (one pure
wheel, one only for Windows), so no network is needed; one slow test fetches a small wheel
from PyPI. The Docker tests point DOCKER_HOST at a loopback port nobody listens on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zipfile
from pathlib import Path

import httpx
import pytest

from mlshift._exceptions import BuildError
from mlshift.image import build_image, build_image_result
from tests.fixtures.registry import Registry, free_port, make_bundle, push_base_image
from tests.integration.test_image_build import base_labels


def make_wheel(dest: Path, name: str, version: str, tag: str) -> Path:
    """A minimal valid wheel holding ``<name>/__init__.py``."""
    path = dest / f"{name}-{version}-{tag}.whl"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{name}-{version}.dist-info/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data in files.items():
            zf.writestr(arcname, data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local directory with a pure wheel and a Windows-only wheel."""
    house = tmp_path / "wheels"
    house.mkdir()
    make_wheel(house, "mlshifttoy", "1.0", "py3-none-any")
    make_wheel(house, "winonly", "2.0", "cp311-cp311-win_amd64")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    return house


@pytest.fixture(scope="module")
def deps_base(registry: Registry) -> str:
    push_base_image(registry, "deps/base", "1", labels=base_labels())
    return f"{registry.host}/deps/base:1"


def test_missing_package_goes_into_a_cached_deps_layer(
    registry: Registry, deps_base: str, image_cache: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    reqs = {"scikit-learn": "1.5.2", "mlshifttoy": "1.0"}
    repo = f"{registry.host}/deps/m"
    first = build_image_result(
        make_bundle(tmp_path / "v1", requirements=reqs),
        "v1",
        repository=repo,
        base=deps_base,
        progress=False,
    )
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    pushed = httpx.get(f"{registry.url}/v2/deps/m/manifests/m-v1", headers=accept).json()
    deps_digest = pushed["layers"][1]["digest"]
    assert deps_digest in first.stats.uploaded
    blob = httpx.get(f"{registry.url}/v2/deps/m/blobs/{deps_digest}").content
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        names = tar.getnames()
    assert "opt/mlshift/deps/mlshifttoy/__init__.py" in names
    assert not any("scikit" in n for n in names)  # the base has it
    config_digest = pushed["config"]["digest"]
    config = httpx.get(f"{registry.url}/v2/deps/m/blobs/{config_digest}").json()
    assert "mlshifttoy==1.0" in config["config"]["Labels"]["io.mlshift.python-packages"]
    assert list(image_cache.glob("layers/deps-*.tar.gz"))

    second = build_image_result(
        make_bundle(tmp_path / "v2", payload=b"v2", requirements=reqs),
        "v2",
        repository=repo,
        base=deps_base,
        progress=False,
    )
    assert deps_digest in second.stats.skipped
    assert deps_digest not in second.stats.uploaded


def _deps_layer(reg: Registry, repo: str, tag: str) -> dict[str, bytes]:
    import gzip
    import io
    import tarfile

    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    pushed = httpx.get(f"{reg.url}/v2/{repo}/manifests/{tag}", headers=accept).json()
    blob = httpx.get(f"{reg.url}/v2/{repo}/blobs/{pushed['layers'][1]['digest']}").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_deps_layer_carries_bytecode_for_the_image_python_only(
    registry: Registry, image_cache: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    """A read-only pod root fs cannot cache bytecode, so the layer brings it (PEP 552)."""
    import sys

    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    for python in (here, other):
        repo = f"pyc{python.replace('.', '')}/m"
        push_base_image(
            registry, f"{repo}-base", "1", labels=base_labels(**{"io.mlshift.python": python})
        )
        build_image(
            make_bundle(tmp_path / python, requirements={"mlshifttoy": "1.0"}),
            "v1",
            repository=f"{registry.host}/{repo}",
            base=f"{registry.host}/{repo}-base:1",
            progress=False,
        )
        files = _deps_layer(registry, repo, "m-v1")
        pyc = f"opt/mlshift/deps/mlshifttoy/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"
        if python == here:
            # flags word: hash-based (bit 0), unchecked (bit 1 clear): valid with mtime 0
            assert int.from_bytes(files[pyc][4:8], "little") == 0b01
        else:
            assert not any(name.endswith(".pyc") for name in files)


def test_requirement_without_wheel_for_platform(
    registry: Registry, deps_base: str, image_cache: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "b", requirements={"winonly": "2.0"})
    with pytest.raises(BuildError, match=r"no wheel of winonly==2.0 for linux/amd64"):
        build_image(
            bundle, "v1", repository=f"{registry.host}/deps/w", base=deps_base, progress=False
        )
    tags = httpx.get(f"{registry.url}/v2/deps/w/tags/list")
    assert tags.status_code == 404 or not tags.json().get("tags")


@pytest.mark.slow
def test_wheel_from_pypi(
    registry: Registry, deps_base: str, image_cache: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "b", requirements={"six": "1.16.0"})
    try:
        httpx.head("https://pypi.org/simple/six/", timeout=5)
    except httpx.HTTPError:
        pytest.skip("PyPI is not reachable")
    ref = build_image(
        bundle, "v1", repository=f"{registry.host}/deps/six", base=deps_base, progress=False
    )
    assert ref.startswith(f"{registry.host}/deps/six@sha256:")
    assert any(p.name.startswith("deps-") for p in (image_cache / "layers").iterdir())


def test_docker_builder_without_engine_is_a_clear_error(
    image_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(BuildError, match=r"builder='docker' needs a Docker engine.*daemonless"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository="127.0.0.1:1/x/m",
            base="127.0.0.1:1/base:1",
            builder="docker",
            progress=False,
        )


def test_auto_builder_falls_back_to_daemonless(  # noqa: PLR0917 (fixtures)
    registry: Registry,
    deps_base: str,
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.INFO, logger="mlshift.image"):
        ref = build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{registry.host}/auto/m",
            base=deps_base,
            progress=False,
        )
    assert ref.startswith(f"{registry.host}/auto/m@sha256:")
    assert "building without a Docker daemon" in caplog.text
