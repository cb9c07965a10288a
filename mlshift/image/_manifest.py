"""Image manifests and configs: reading the base, selecting a platform, writing the result.

Owns the JSON side of an image: picking the platform's manifest out of an OCI index or a
Docker manifest list, keeping the base's manifest flavour (OCI or Docker v2, with matching
layer and config media types), and composing the new config (Env, Entrypoint, ExposedPorts,
User, labels, ``rootfs.diff_ids``, history) in canonical JSON so digests are reproducible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlshift._exceptions import BuildError
from mlshift.image._layers import LayerBlob
from mlshift.image._registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

__all__ = [
    "BaseImage",
    "ImageSpec",
    "canonical",
    "compose_config",
    "compose_manifest",
    "parse_platform",
    "select_platform",
]

_LAYER_TYPE = {
    OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
    DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
_CONFIG_TYPE = {
    OCI_MANIFEST: "application/vnd.oci.image.config.v1+json",
    DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
}


def canonical(value: Any) -> bytes:
    """Sorted keys, no spaces: the same object always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_platform(platform: str) -> tuple[str, str, str]:
    """``"linux/arm64/v8"`` -> ``("linux", "arm64", "v8")``; the variant may be empty.

    Example:
        >>> parse_platform("linux/amd64")
        ('linux', 'amd64', '')
    """
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise BuildError(
            f"platform {platform!r} is not os/architecture[/variant]; use e.g. 'linux/amd64'"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


@dataclass(frozen=True)
class BaseImage:
    """The resolved base: its single-platform manifest and config."""

    name: str
    repository: str
    media_type: str
    manifest: dict[str, Any]
    digest: str
    config: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        """The base config's labels (empty when it has none)."""
        return dict((self.config.get("config") or {}).get("Labels") or {})


@dataclass(frozen=True)
class ImageSpec:
    """What mlshift sets in the new image's config."""

    env: dict[str, str]
    labels: dict[str, str]
    created: str
    user: str = "65532:65532"  # uid:gid of the Deployment's runAsUser/runAsGroup
    entrypoint: tuple[str, ...] = ("python3", "-m", "model_server")
    port: int = 8080
    workdir: str = "/opt/mlshift"


def select_platform(index: dict[str, Any], platform: str, name: str) -> dict[str, Any]:
    """The descriptor of ``platform``'s manifest in an index / manifest list."""
    want_os, want_arch, want_variant = parse_platform(platform)
    offered = []
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") or {}
        os_name, arch, variant = plat.get("os"), plat.get("architecture"), plat.get("variant", "")
        offered.append("/".join(p for p in (os_name, arch, variant) if p))
        if os_name != want_os or arch != want_arch:
            continue
        if want_variant and variant and variant != want_variant:
            continue
        if entry.get("mediaType") not in (OCI_MANIFEST, DOCKER_MANIFEST):
            continue
        return dict(entry)
    raise BuildError(
        f"base image {name} has no manifest for {platform} (it offers"
        f" {', '.join(offered) or 'none'}); pass platform= one of those or another base="
    )


def check_single(media_type: str, manifest: dict[str, Any], name: str) -> str:
    """The manifest flavour (OCI or Docker v2) or a BuildError for anything else."""
    declared = manifest.get("mediaType") or media_type
    if declared in (OCI_INDEX, DOCKER_LIST):
        return declared
    if manifest.get("schemaVersion") != 2 or declared not in (OCI_MANIFEST, DOCKER_MANIFEST):
        if "config" in manifest and manifest.get("schemaVersion") == 2:
            return OCI_MANIFEST  # OCI manifests may omit mediaType
        raise BuildError(
            f"base image {name} has a manifest of type {declared or 'unknown'}; mlshift needs"
            " an OCI or Docker v2 (schema 2) image: re-push the base with a current tool"
        )
    return str(declared)


def compose_config(base: BaseImage, spec: ImageSpec, added: list[tuple[LayerBlob, str]]) -> bytes:
    """The new image config: the base's, with mlshift's settings and added layers."""
    config = json.loads(canonical(base.config))
    runtime = dict(config.get("config") or {})
    env = dict(item.split("=", 1) for item in runtime.get("Env") or [] if "=" in item)
    for key, value in spec.env.items():
        joined = key == "PYTHONPATH" and env.get(key)
        env[key] = f"{value}:{env[key]}" if joined else value
    runtime["Env"] = [f"{k}={v}" for k, v in env.items()]
    runtime["Entrypoint"] = list(spec.entrypoint)
    runtime["Cmd"] = None
    runtime["User"] = spec.user
    runtime["WorkingDir"] = spec.workdir
    runtime["ExposedPorts"] = {**(runtime.get("ExposedPorts") or {}), f"{spec.port}/tcp": {}}
    runtime["Labels"] = {**(runtime.get("Labels") or {}), **spec.labels}
    config["config"] = runtime
    config["created"] = spec.created
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), *(blob.diff_id for blob, _ in added)]
    history = list(config.get("history") or [])
    history += [{"created": spec.created, "created_by": f"mlshift: {why}"} for _, why in added]
    config["history"] = history
    config.pop("container_config", None)  # describes the base's last build step, not ours
    config.pop("container", None)
    return canonical(config)


def compose_manifest(
    base: BaseImage, config_digest: str, config_size: int, layers: list[LayerBlob]
) -> bytes:
    """The new single-platform manifest, in the base's flavour."""
    flavour = base.media_type
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": flavour,
        "config": {
            "mediaType": _CONFIG_TYPE[flavour],
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            *base.manifest.get("layers", []),
            *(
                {"mediaType": _LAYER_TYPE[flavour], "digest": b.digest, "size": b.size}
                for b in layers
            ),
        ],
    }
    return canonical(manifest)
