"""Pure parts of mlshift.image: references, tags, challenges, layers, manifests, pip planning.

No network and no files: layers are built from in-memory entries.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile

import pytest

import mlshift.image
from mlshift._exceptions import BuildError, InvalidNameError
from mlshift.image._auth import parse_challenge
from mlshift.image._layers import Entry, LayerBlob, LayerStream
from mlshift.image._manifest import (
    BaseImage,
    ImageSpec,
    compose_config,
    compose_manifest,
    select_platform,
)
from mlshift.image._pip import missing_requirements, parse_packages, platform_tags
from mlshift.image._python import BasePython, base_python
from mlshift.image._reference import image_tag, is_loopback, parse_reference
from mlshift.image._registry import OCI_MANIFEST


def test_exports_are_curated() -> None:
    assert set(mlshift.image.__all__) == {
        "BuildResult",
        "DEFAULT_BASE_IMAGE",
        "build_image",
        "build_image_result",
        "image_tag",
    }
    assert all(hasattr(mlshift.image, name) for name in mlshift.image.__all__)


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python", "registry-1.docker.io", "library/python", None, None),
        ("docker.io/python:3.11-slim", "registry-1.docker.io", "library/python", "3.11-slim", None),
        ("ghcr.io/org/img:v1", "ghcr.io", "org/img", "v1", None),
        ("localhost:5000/a/b", "localhost:5000", "a/b", None, None),
        ("127.0.0.1:5000/m@sha256:" + "a" * 64, "127.0.0.1:5000", "m", None, "sha256:" + "a" * 64),
        ("[::1]:5000/m:t", "[::1]:5000", "m", "t", None),
    ],
)
def test_parse_reference(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize("text", ["", "Reg.io/UPPER", "reg.io/a:b:c", "m@sha256:short", "a//b"])
def test_parse_reference_rejects(text: str) -> None:
    with pytest.raises(BuildError):
        parse_reference(text)


def test_reference_host_and_loopback() -> None:
    assert parse_reference("[::1]:5000/m").host == "::1"
    assert parse_reference("127.0.0.1:5000/m").host == "127.0.0.1"
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("10.0.0.1") and not is_loopback("registry.example.com")


def test_image_tag() -> None:
    assert image_tag("reg.io/ml/churn", None, "v2") == "reg.io/ml/churn:churn-v2"
    assert image_tag("reg.io/ml/models", "churn", "v2") == "reg.io/ml/models:churn-v2"
    with pytest.raises(BuildError, match="carries a tag"):
        image_tag("reg.io/ml/churn:latest", None, "v2")
    with pytest.raises(InvalidNameError):
        image_tag("reg.io/ml/my_models", None, "v2")
    with pytest.raises(InvalidNameError):
        image_tag("reg.io/ml/churn", None, "V2")


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/python:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def _layer(entries: list[Entry]) -> tuple[bytes, LayerBlob]:
    stream = LayerStream(entries)
    data = b"".join(stream)
    return data, stream.result()


def test_layer_is_reproducible_and_normalized() -> None:
    a, blob_a = _layer([Entry("opt/m/b.txt", data=b"b"), Entry("opt/m/a.txt", data=b"a" * 700)])
    b, blob_b = _layer([Entry("opt/m/a.txt", data=b"a" * 700), Entry("opt/m/b.txt", data=b"b")])
    assert a == b and blob_a == blob_b
    assert a[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(a))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["opt", "opt/m", "opt/m/a.txt", "opt/m/b.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert members[0].isdir() and members[0].mode == 0o755 and members[2].mode == 0o644
    import hashlib

    assert blob_a.digest == f"sha256:{hashlib.sha256(a).hexdigest()}"
    assert blob_a.diff_id == f"sha256:{hashlib.sha256(gzip.decompress(a)).hexdigest()}"
    assert blob_a.size == len(a)


def test_layer_hashes_chosen_files_and_rejects_escapes() -> None:
    stream = LayerStream([Entry("m/model.bin", data=b"x" * 10)], hash_paths=["/m/model.bin"])
    b"".join(stream)
    import hashlib

    assert stream.file_sha256["m/model.bin"] == hashlib.sha256(b"x" * 10).hexdigest()
    with pytest.raises(BuildError, match="not a relative path"):
        LayerStream([Entry("../etc/passwd", data=b"")])
    with pytest.raises(RuntimeError):
        LayerStream([Entry("a", data=b"")]).result()


def test_select_platform() -> None:
    index = {
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": "sha256:a",
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": "sha256:b",
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ]
    }
    assert select_platform(index, "linux/amd64", "b")["digest"] == "sha256:a"
    assert select_platform(index, "linux/arm64", "b")["digest"] == "sha256:b"
    with pytest.raises(BuildError, match="linux/amd64, linux/arm64/v8"):
        select_platform(index, "linux/riscv64", "b")


def test_compose_config_and_manifest() -> None:
    base = BaseImage(
        name="reg/base:1",
        repository="base",
        media_type=OCI_MANIFEST,
        manifest={"layers": [{"mediaType": "x", "digest": "sha256:base", "size": 1}]},
        digest="sha256:m",
        config={
            "os": "linux",
            "architecture": "amd64",
            "config": {"Env": ["PATH=/bin", "PYTHONPATH=/base"], "Labels": {"keep": "1"}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:d0"]},
        },
    )
    spec = ImageSpec(
        env={"PYTHONPATH": "/opt/lib", "A": "1"},
        labels={"new": "2"},
        created="2026-01-01T00:00:00Z",
    )
    layer = LayerBlob("sha256:l1", "sha256:d1", 10)
    config = json.loads(compose_config(base, spec, [(layer, "bundle")]))
    assert config["config"]["Env"] == ["PATH=/bin", "PYTHONPATH=/opt/lib:/base", "A=1"]
    assert config["config"]["Labels"] == {"keep": "1", "new": "2"}
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["python3", "-m", "model_server"]
    assert config["rootfs"]["diff_ids"] == ["sha256:d0", "sha256:d1"]
    manifest = json.loads(compose_manifest(base, "sha256:c", 5, [layer]))
    assert [entry["digest"] for entry in manifest["layers"]] == ["sha256:base", "sha256:l1"]
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert compose_config(base, spec, [(layer, "b")]) == compose_config(base, spec, [(layer, "b")])


def test_default_base_is_the_official_slim_python_of_this_python() -> None:
    want = f"docker.io/library/python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert want == mlshift.image.DEFAULT_BASE_IMAGE
    ref = parse_reference(mlshift.image.DEFAULT_BASE_IMAGE)
    assert (ref.registry, ref.repository) == ("registry-1.docker.io", "library/python")


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        # python:3.11-slim: no labels, PYTHON_VERSION in Env, python3 on PATH (/usr/local/bin)
        ({"Env": ["PATH=/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.11.14"]}, ("3.11", "python3")),
        # a Debian base labelled by hand, its interpreter named
        (
            {
                "Labels": {
                    "io.mlshift.python": "3.11",
                    "io.mlshift.python-executable": "/usr/bin/python3",
                }
            },
            ("3.11", "/usr/bin/python3"),
        ),
        # the label wins over the environment
        (
            {"Env": ["PYTHON_VERSION=3.12.1"], "Labels": {"io.mlshift.python": "3.13"}},
            ("3.13", "python3"),
        ),
    ],
)
def test_base_python_is_read_from_the_config(
    runtime: dict[str, object], expected: tuple[str, str]
) -> None:
    assert base_python({"config": runtime}, "b") == BasePython(*expected)


def test_base_python_unknown_or_malformed_is_a_clear_error() -> None:
    with pytest.raises(BuildError, match=r"does not say which Python.*io\.mlshift\.python=3\.X"):
        base_python({"config": {"Env": ["PATH=/usr/bin"]}}, "debian:12")
    with pytest.raises(BuildError, match="CPython 3.X"):
        base_python({"config": {"Labels": {"io.mlshift.python": "pypy"}}}, "b")


def test_pip_planning() -> None:
    assert parse_packages("numpy==1.26.4, Scikit_Learn==1.5.2 junk") == {
        "numpy": "1.26.4",
        "scikit-learn": "1.5.2",
    }
    assert missing_requirements(
        {"scikit-learn": "1.5.2", "six": "1"}, {"scikit-learn": "1.5.2"}
    ) == {"six": "1"}
    assert missing_requirements({"numpy": "2.0.0"}, {"numpy": "1.26.4"}) == {"numpy": "2.0.0"}
    assert "manylinux_2_17_x86_64" in platform_tags("linux/amd64")
    assert all(tag.endswith("aarch64") for tag in platform_tags("linux/arm64"))
    with pytest.raises(BuildError, match="linux/amd64 or linux/arm64"):
        platform_tags("windows/amd64")
