"""Registry auth against real registries: htpasswd Basic and Bearer token challenge.

Covers where credentials come from (MLSHIFT_REGISTRY_* variables, ~/.docker/config.json
``auths``, a credential helper program), the Bearer flow with a loopback token service the
registry trusts, copying a base from another registry, and the 401 messages.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

from mlshift._exceptions import RegistryAuthError
from mlshift.image import build_image
from tests.fixtures.registry import (
    PASSWORD,
    USER,
    Registry,
    TokenService,
    make_bundle,
    push_base_image,
)
from tests.integration.test_image_build import base_labels


@pytest.fixture(scope="module")
def auth_base(auth_registry: Registry) -> str:
    push_base_image(auth_registry, "mlshift/base", "1", labels=base_labels())
    return f"{auth_registry.host}/mlshift/base:1"


def test_no_credentials_names_registry_and_places_searched(
    auth_registry: Registry, auth_base: str, image_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(RegistryAuthError) as caught:
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{auth_registry.host}/ml/m",
            base=auth_base,
            progress=False,
        )
    message = str(caught.value)
    assert auth_registry.host in message
    assert "MLSHIFT_REGISTRY_USERNAME" in message
    assert str(tmp_path / "docker-config" / "config.json") in message


def test_wrong_password_is_refused(
    auth_registry: Registry,
    auth_base: str,
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSHIFT_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("MLSHIFT_REGISTRY_PASSWORD", "wrong")
    with pytest.raises(RegistryAuthError, match=rf"user '{USER}' from MLSHIFT_REGISTRY_USERNAME"):
        build_image(
            make_bundle(tmp_path / "b"),
            "v1",
            repository=f"{auth_registry.host}/ml/m",
            base=auth_base,
            progress=False,
        )


def test_env_credentials(
    auth_registry: Registry,
    auth_base: str,
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSHIFT_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("MLSHIFT_REGISTRY_PASSWORD", PASSWORD)
    ref = build_image(
        make_bundle(tmp_path / "b"),
        "v1",
        repository=f"{auth_registry.host}/env/m",
        base=auth_base,
        progress=False,
    )
    got = httpx.get(
        f"{auth_registry.url}/v2/env/m/manifests/m-v1",
        auth=(USER, PASSWORD),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert got.headers["Docker-Content-Digest"] == ref.split("@")[1]


def test_docker_config_auths(
    auth_registry: Registry, auth_base: str, image_cache: Path, tmp_path: Path
) -> None:
    config_dir = Path(os.environ["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    ref = build_image(
        make_bundle(tmp_path / "b"),
        "v1",
        repository=f"{auth_registry.host}/cfg/m",
        base=auth_base,
        progress=False,
    )
    assert ref.startswith(f"{auth_registry.host}/cfg/m@sha256:")


def test_docker_credential_helper(
    auth_registry: Registry,
    auth_base: str,
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "helper-calls"
    helper = bin_dir / "docker-credential-mlshifttest"
    helper.write_text(
        "#!/bin/sh\n"
        f'read server; echo "$1 $server" >> {calls}\n'
        f'echo \'{{"ServerURL": "\'$server\'", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config_dir = Path(os.environ["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.json").write_text(
        json.dumps({"credHelpers": {auth_registry.host: "mlshifttest"}})
    )
    ref = build_image(
        make_bundle(tmp_path / "b"),
        "v1",
        repository=f"{auth_registry.host}/hlp/m",
        base=auth_base,
        progress=False,
    )
    assert ref.startswith(f"{auth_registry.host}/hlp/m@sha256:")
    assert calls.read_text().split() == ["get", auth_registry.host]


def test_bearer_token_flow_and_cross_registry_base(
    registry: Registry,
    token_registry: tuple[Registry, TokenService],
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The base lives on the plain registry; its layer is copied to the token registry."""
    reg, tokens = token_registry
    push_base_image(registry, "bearer/base", "1", labels=base_labels())
    base = f"{registry.host}/bearer/base:1"
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(RegistryAuthError, match=reg.host):
        build_image(bundle, "v1", repository=f"{reg.host}/tok/m", base=base, progress=False)

    monkeypatch.setenv("MLSHIFT_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("MLSHIFT_REGISTRY_PASSWORD", PASSWORD)
    tokens.requests.clear()
    ref = build_image(bundle, "v1", repository=f"{reg.host}/tok/m", base=base, progress=False)
    scopes = {s for query in tokens.requests for s in query.get("scope", [])}
    # The registry names the actions in either order (it iterates a Go map).
    actions = [
        set(s.rsplit(":", 1)[1].split(",")) for s in scopes if s.startswith("repository:tok/m:")
    ]
    assert {"pull", "push"} in actions, scopes
    assert all(query.get("service") == ["mlshift-test"] for query in tokens.requests)
    token = tokens.sign(["repository:tok/m:pull"])
    got = httpx.get(
        f"{reg.url}/v2/tok/m/manifests/m-v1",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
    )
    assert got.headers["Docker-Content-Digest"] == ref.split("@")[1]
    assert len(got.json()["layers"]) == 3  # base rootfs (copied), model_server, bundle
