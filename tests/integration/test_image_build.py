"""Daemonless image builds against a real docker-registry, checked with skopeo and umoci.

Covers the image layout (bundle, model_server, config), reproducible digests, layer reuse
across versions, cross-repo mounts, platform selection from indexes, Docker v2 bases, and
that a failing build never leaves a tag behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from mlshift._exceptions import BuildError, DigestMismatchError
from mlshift.image import build_image, build_image_result
from mlshift.image._inputs import model_server_requirements
from tests.fixtures.registry import Registry, free_port, make_bundle, push_base_image

BASE_REPO = "mlshift/base"


def base_labels(**extra: str) -> dict[str, str]:
    """Labels of a base that has model_server's runtime packages and scikit-learn 1.5.2."""
    packages = {**model_server_requirements(), "scikit-learn": "1.5.2"}
    labels = {
        "io.mlshift.python": "3.11",
        "io.mlshift.python-packages": " ".join(f"{n}=={v}" for n, v in packages.items()),
    }
    return {**labels, **extra}


@pytest.fixture(scope="module")
def base(registry: Registry) -> str:
    push_base_image(registry, BASE_REPO, "py3.11", labels=base_labels())
    return f"{registry.host}/{BASE_REPO}:py3.11"


def manifest(reg: Registry, repo: str, ref: str) -> httpx.Response:
    accept = (
        "application/vnd.oci.image.manifest.v1+json,"
        " application/vnd.docker.distribution.manifest.v2+json"
    )
    return httpx.get(f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})


def config_of(reg: Registry, repo: str, ref: str) -> dict[str, object]:
    digest = manifest(reg, repo, ref).json()["config"]["digest"]
    return httpx.get(f"{reg.url}/v2/{repo}/blobs/{digest}").json()  # type: ignore[no-any-return]


def test_image_has_bundle_server_and_config(
    registry: Registry, base: str, image_cache: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "b1", payload=b"weights-1" * 1000)
    ref = build_image(
        bundle, "v1", repository=f"{registry.host}/ml/churn", base=base, progress=False
    )
    repo_name, digest = ref.split("@")
    assert repo_name == f"{registry.host}/ml/churn"
    tagged = manifest(registry, "ml/churn", "churn-v1")
    assert tagged.status_code == 200
    assert tagged.headers["Docker-Content-Digest"] == digest

    skopeo = shutil.which("skopeo")
    umoci = shutil.which("umoci")
    if not (skopeo and umoci):
        pytest.skip("skopeo and umoci are needed to inspect the image")
    inspect = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", "--config", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(inspect.stdout)["config"]
    assert config["User"] == "65532:65532"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Entrypoint"] == ["python3", "-m", "model_server"]
    assert config.get("Cmd") is None  # the base's Cmd (python3) must not become arguments
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MLSHIFT_MODEL_DIR"] == "/opt/mlshift/model"
    assert env["MLSHIFT_MODEL_VERSION"] == "v1"
    assert env["MLSHIFT_MODEL_NAME"] == "churn"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"  # the base's Env is kept
    assert "/opt/mlshift/deps" in env["PYTHONPATH"]
    labels = config["Labels"]
    meta = json.loads((bundle / "mlshift.json").read_text())
    assert labels["io.mlshift.model.sha256"] == meta["sha256"]
    assert labels["io.mlshift.version"] == "v1"
    assert labels["org.opencontainers.image.version"] == "v1"
    assert labels["org.opencontainers.image.base.name"] == base

    layout = tmp_path / "oci"
    subprocess.run(
        [skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img"],
        capture_output=True,
        check=True,
    )
    out = tmp_path / "unpacked"
    subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{layout}:img", str(out)],
        capture_output=True,
        check=True,
    )
    rootfs = out / "rootfs"
    assert json.loads((rootfs / "opt/mlshift/model/mlshift.json").read_text()) == meta
    assert (rootfs / "opt/mlshift/model/model.skops").read_bytes() == b"weights-1" * 1000
    server = rootfs / "opt/mlshift/lib/model_server"
    assert server.is_dir() and any(server.glob("*.py"))
    assert (rootfs / "usr/bin/python3").exists()  # the base layer is there too


def test_same_bundle_gives_same_digest(
    registry: Registry,
    base: str,
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = make_bundle(tmp_path / "b", payload=b"same" * 5000)
    first = build_image_result(
        bundle,
        "v1",
        repository=f"{registry.host}/repro/a",
        endpoint="churn",
        base=base,
        progress=False,
    )
    monkeypatch.setenv("MLSHIFT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    copy = shutil.copytree(bundle, tmp_path / "copy")  # new mtimes, same content
    second = build_image_result(
        copy,
        "v1",
        repository=f"{registry.host}/repro/b",
        endpoint="churn",
        base=base,
        progress=False,
    )
    assert first.reference.split("@")[1] == second.reference.split("@")[1]
    assert len(second.stats.uploaded) >= 2  # it really rebuilt and uploaded layers


def test_second_version_uploads_only_its_bundle_layer(
    registry: Registry, base: str, image_cache: Path, tmp_path: Path
) -> None:
    repo = f"{registry.host}/reuse/churn"
    first = build_image_result(
        make_bundle(tmp_path / "v1", payload=b"one" * 999),
        "v1",
        repository=repo,
        base=base,
        progress=False,
    )
    assert first.stats.mounted  # the base's layer came from mlshift/base by cross-repo mount
    second = build_image_result(
        make_bundle(tmp_path / "v2", payload=b"two" * 999),
        "v2",
        repository=repo,
        base=base,
        progress=False,
    )
    layers = manifest(registry, "reuse/churn", "churn-v2").json()["layers"]
    config_digest = manifest(registry, "reuse/churn", "churn-v2").json()["config"]["digest"]
    assert sorted(second.stats.uploaded) == sorted([layers[-1]["digest"], config_digest])
    assert not second.stats.mounted
    first_layers = manifest(registry, "reuse/churn", "churn-v1").json()["layers"]
    assert layers[:-1] == first_layers[:-1]  # base and model_server layers are shared


def test_index_base_selects_platform_and_keeps_docker_flavour(
    registry: Registry, image_cache: Path, tmp_path: Path
) -> None:
    push_base_image(
        registry,
        "multi/base",
        "1",
        labels=base_labels(),
        flavour="docker",
        platforms=("linux/amd64", "linux/arm64"),
        as_index=True,
    )
    ref = build_image(
        make_bundle(tmp_path / "b"),
        "v1",
        repository=f"{registry.host}/multi/m",
        base=f"{registry.host}/multi/base:1",
        platform="linux/arm64",
        progress=False,
    )
    pushed = manifest(registry, "multi/m", ref.split("@")[1]).json()
    assert pushed["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert all("docker.image.rootfs" in layer["mediaType"] for layer in pushed["layers"])
    assert config_of(registry, "multi/m", "m-v1")["architecture"] == "arm64"
    with pytest.raises(BuildError, match=r"no manifest for linux/s390x .*linux/amd64"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{registry.host}/multi/m",
            base=f"{registry.host}/multi/base:1",
            platform="linux/s390x",
            progress=False,
        )


def test_base_with_model_server_gets_no_server_layer(
    registry: Registry, image_cache: Path, tmp_path: Path
) -> None:
    push_base_image(
        registry, "full/base", "1", labels=base_labels(**{"io.mlshift.model-server": "0.1.0"})
    )
    ref = build_image(
        make_bundle(tmp_path / "b"),
        "v1",
        repository=f"{registry.host}/full/m",
        base=f"{registry.host}/full/base:1",
        progress=False,
    )
    layers = manifest(registry, "full/m", ref.split("@")[1]).json()["layers"]
    assert len(layers) == 2  # the base's rootfs and the bundle


def test_tampered_bundle_is_refused_and_nothing_is_tagged(
    registry: Registry, base: str, image_cache: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "b", payload=b"original")
    (bundle / "model.skops").write_bytes(b"tampered")
    with pytest.raises(DigestMismatchError, match="re-create it"):
        build_image(
            bundle, "v1", repository=f"{registry.host}/bad/churn", base=base, progress=False
        )
    assert manifest(registry, "bad/churn", "churn-v1").status_code == 404


def test_base_that_does_not_say_its_python_is_refused(
    registry: Registry, image_cache: Path, tmp_path: Path
) -> None:
    """Wheels are picked for the base's Python, so a base must say which one it has."""
    push_base_image(registry, "nopy/base", "1", labels={})
    with pytest.raises(BuildError, match=r"nopy/base:1 does not say which Python"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{registry.host}/nopy/churn",
            base=f"{registry.host}/nopy/base:1",
            progress=False,
        )
    assert manifest(registry, "nopy/churn", "churn-v1").status_code == 404


def test_missing_base_image(registry: Registry, image_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"base image .*nope:1 was not found"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{registry.host}/x/churn",
            base=f"{registry.host}/mlshift/nope:1",
            progress=False,
        )


def test_unreachable_registry(image_cache: Path, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(BuildError, match=rf"cannot reach registry {host}"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{host}/x/churn",
            base=f"{host}/base:1",
            progress=False,
        )


def test_not_a_registry(image_cache: Path, tmp_path: Path) -> None:
    """An HTTP server that is not a registry is named as such."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(BuildError, match="not an OCI registry"):
            build_image(
                make_bundle(tmp_path / "b"),
                "v1",
                repository=f"{host}/x/churn",
                base=f"{host}/base:1",
                progress=False,
            )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_model_object_is_bundled_then_built(
    registry: Registry, image_cache: Path, tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    from mlshift._bundle import detect_requirements

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    labels = base_labels()
    packages = " ".join(f"{n}=={v}" for n, v in detect_requirements(model).items())
    labels["io.mlshift.python-packages"] += f" {packages}"
    push_base_image(registry, "obj/base", "1", labels=labels)
    ref = build_image(
        model,
        "v3",
        repository=f"{registry.host}/obj/churn",
        base=f"{registry.host}/obj/base:1",
        progress=False,
    )
    config = config_of(registry, "obj/churn", ref.split("@")[1])
    assert config["config"]["Labels"]["io.mlshift.version"] == "v3"  # type: ignore[index]
    assert len(manifest(registry, "obj/churn", "churn-v3").json()["layers"]) == 3
