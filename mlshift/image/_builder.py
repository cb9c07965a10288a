"""The daemonless builder: base image + dependency, ``model_server`` and bundle layers.

Owns the order of a push, which is what makes a failed build harmless: read the base, build
or reuse layers, make every blob present in the target repository (``HEAD`` to skip, mount
from the base's repository on the same registry, copy from another registry, or upload),
then push the manifest by digest, and only then the tag. A failure at any step leaves at
most unreferenced blobs behind, never a tag pointing at half an image.

How mlshift knows what the base has: its Python comes from the config (``_python``: the
``io.mlshift.python`` label or the official images' ``PYTHON_VERSION``); base images built
from mlshift's Dockerfile also carry ``io.mlshift.python-packages`` (``"numpy==1.26.4
pandas==2.2.2 ..."``, space-separated) and ``io.mlshift.model-server`` (the mlshift version whose
``model_server`` is installed). A base without them, such as the default ``python:3.X-slim``,
is assumed to have no packages and no ``model_server``: both are added as layers, with
model_server's runtime packages as wheels for the base's Python and platform. The built image
carries the labels updated with what was added, so it is itself a labelled base.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mlshift._exceptions import BuildError, DigestMismatchError
from mlshift.image._inputs import (
    MODEL_DIR,
    SERVER_DIR,
    Bundle,
    model_server_entries,
    model_server_requirements,
)
from mlshift.image._layers import LayerBlob, LayerStream
from mlshift.image._manifest import (
    BaseImage,
    ImageSpec,
    check_single,
    compose_config,
    compose_manifest,
    select_platform,
)
from mlshift.image._pip import DEPS_DIR, build_deps_layer, cache_dir, parse_packages
from mlshift.image._python import LABEL_PYTHON, LABEL_PYTHON_EXECUTABLE, base_python
from mlshift.image._reference import ImageReference
from mlshift.image._registry import DOCKER_LIST, OCI_INDEX, PushStats, RegistryClient

__all__ = ["BuildResult", "build_daemonless", "image_spec", "resolve_base"]

log = logging.getLogger("mlshift.image")

LABEL_PACKAGES = "io.mlshift.python-packages"
LABEL_SERVER = "io.mlshift.model-server"


class BuildResult:
    """The pushed image: ``reference`` (repo@sha256:...), its tag and what the push did."""

    def __init__(self, reference: str, tag: str, stats: PushStats) -> None:
        self.reference = reference
        self.tag = tag
        self.stats = stats

    def __repr__(self) -> str:
        return f"<BuildResult {self.reference}>"


def resolve_base(client: RegistryClient, ref: ImageReference, platform: str) -> BaseImage:
    """Fetch the base's manifest (selecting ``platform`` from an index) and its config."""
    found = client.get_manifest(ref.repository, ref.reference)
    if found is None:
        raise BuildError(
            f"base image {ref} was not found on {ref.registry}; check the name and tag,"
            " push the base there first, or pass another base="
        )
    body, media_type, digest = found
    manifest = json.loads(body)
    flavour = check_single(media_type, manifest, str(ref))
    if flavour in (OCI_INDEX, DOCKER_LIST):
        entry = select_platform(manifest, platform, str(ref))
        found = client.get_manifest(ref.repository, entry["digest"])
        if found is None:
            raise BuildError(
                f"base image {ref} lists {entry['digest']} for {platform}, but the registry"
                " does not have it; the base was pushed incompletely, re-push it"
            )
        body, media_type, digest = found
        manifest = json.loads(body)
        flavour = check_single(media_type, manifest, str(ref))
    config = json.loads(client.get_blob(ref.repository, manifest["config"]["digest"]))
    want_os, want_arch = platform.split("/")[:2]
    if (config.get("os"), config.get("architecture")) != (want_os, want_arch):
        raise BuildError(
            f"base image {ref} is {config.get('os')}/{config.get('architecture')}, not"
            f" {platform}; pass platform= to match it or choose a base built for {platform}"
        )
    return BaseImage(str(ref), ref.repository, flavour, manifest, digest, config)


def _bundle_cache_key(bundle: Bundle) -> str:
    h = hashlib.sha256(bundle.manifest_bytes)
    for entry in bundle.entries():
        if entry.source is not None:
            st = entry.source.stat()
            h.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _verify_model(bundle: Bundle, actual: str) -> None:
    if actual != bundle.sha256:
        raise DigestMismatchError(
            f"model file {bundle.path / bundle.model_file} has sha256 {actual[:12]}…, but its"
            f" mlshift.json records {bundle.sha256[:12]}…: the bundle was changed after it was"
            " written; re-create it from the model (nothing was tagged)"
        )


def build_daemonless(
    bundle: Bundle,
    version: str,
    *,
    target: ImageReference,
    tag: str,
    base: ImageReference,
    endpoint: str,
    platform: str,
    insecure: bool | None,
    progress: bool,
) -> BuildResult:
    """Build the image from ``base`` and push it as ``target``; see the module docstring."""
    same_registry = base.registry == target.registry
    scopes = (f"repository:{base.repository}:pull",) if same_registry else ()
    with RegistryClient(target.registry, insecure=insecure, extra_scopes=scopes) as dst:
        dst.ping()
        if same_registry:
            return _build(
                _Job(bundle, version, dst, dst, target, tag, base, endpoint, platform, progress)
            )
        with RegistryClient(base.registry, insecure=insecure) as src:
            return _build(
                _Job(bundle, version, src, dst, target, tag, base, endpoint, platform, progress)
            )


@dataclass(frozen=True)
class _Job:
    bundle: Bundle
    version: str
    src: RegistryClient
    dst: RegistryClient
    target: ImageReference
    tag: str
    base_ref: ImageReference
    endpoint: str
    platform: str
    progress: bool


def _build(job: _Job) -> BuildResult:
    from tqdm.auto import tqdm

    bundle, version, src, dst, target, tag = (
        job.bundle,
        job.version,
        job.src,
        job.dst,
        job.target,
        job.tag,
    )
    base_ref, endpoint, platform, progress = job.base_ref, job.endpoint, job.platform, job.progress
    repo = target.repository
    base = resolve_base(src, base_ref, platform)
    labels = base.labels
    base_packages = parse_packages(labels.get(LABEL_PACKAGES, ""))
    python = base_python(base.config, base.name, bundle_python=bundle.python)
    labels[LABEL_PYTHON] = python.version
    labels[LABEL_PYTHON_EXECUTABLE] = python.executable
    added: list[tuple[LayerBlob, str]] = []
    uploads: list[tuple[LayerBlob, bytes | None]] = []

    requirements = dict(bundle.requirements)
    server: tuple[LayerBlob, bytes] | None = None
    if not labels.get(LABEL_SERVER):
        entries, server_version = model_server_entries()
        requirements = {**model_server_requirements(), **requirements}
        stream = LayerStream(entries, level=6)
        server_tar = b"".join(stream)
        server = (stream.result(), server_tar)
        labels[LABEL_SERVER] = server_version
    deps = build_deps_layer(
        requirements, python=python.version, platform=platform, base_packages=base_packages
    )
    if deps is not None:
        added.append((deps.blob, f"pip install --target /{DEPS_DIR} ({len(deps.packages)} pkgs)"))
        uploads.append((deps.blob, None))
        labels[LABEL_PACKAGES] = " ".join(
            f"{n}=={v}" for n, v in sorted({**base_packages, **deps.packages}.items())
        )
    if server is not None:
        added.append((server[0], f"COPY model_server /{SERVER_DIR}/model_server"))
        uploads.append(server)

    # Blobs of the base: present, mounted from the base's repository, or copied.
    missing_base = [
        layer
        for layer in base.manifest.get("layers", [])
        if "foreign" not in layer.get("mediaType", "")
        and not dst.blob_exists(repo, layer["digest"])
    ]
    if src is dst and base.repository != repo:
        missing_base = [
            layer for layer in missing_base if not dst.mount(repo, layer["digest"], base.repository)
        ]
    pending_uploads: list[tuple[LayerBlob, bytes | None]] = []
    for blob, data in uploads:
        if dst.blob_exists(repo, blob.digest):
            dst.stats.skipped.append(blob.digest)
        else:
            pending_uploads.append((blob, data))

    cache = cache_dir() / f"bundle-{_bundle_cache_key(bundle)}.json"
    cached = json.loads(cache.read_text(encoding="utf-8")) if cache.exists() else None
    bundle_blob: LayerBlob | None = None
    if cached and dst.blob_exists(repo, cached["digest"]):
        with open(bundle.path / bundle.model_file, "rb") as fh:
            _verify_model(bundle, hashlib.file_digest(fh, "sha256").hexdigest())
        bundle_blob = LayerBlob(cached["digest"], cached["diff_id"], cached["size"])
        dst.stats.skipped.append(bundle_blob.digest)
    bundle_stream = LayerStream(bundle.entries(), hash_paths=[f"{MODEL_DIR}/{bundle.model_file}"])

    total = sum(int(layer["size"]) for layer in missing_base)
    total += sum(b.size for b, _ in pending_uploads)
    total += bundle_stream.total_input if bundle_blob is None else 0
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        disable=not progress or total == 0,
        desc=f"push {tag}",
        leave=False,
    ) as bar:
        for layer in missing_base:
            with src.stream_blob(base.repository, layer["digest"]) as chunks:
                dst.upload(repo, layer["digest"], chunks, int(layer["size"]), on_sent=bar.update)
        for blob, data in pending_uploads:
            dst.upload(
                repo,
                blob.digest,
                data if data is not None else _file_chunks(blob),
                blob.size,
                on_sent=bar.update,
            )
        if bundle_blob is None:
            bundle_stream.on_read = bar.update
            model_path = f"{MODEL_DIR}/{bundle.model_file}"

            def finished() -> str:
                _verify_model(bundle, bundle_stream.file_sha256[model_path])
                return bundle_stream.result().digest

            dst.upload_stream(repo, bundle_stream, finished)
            bundle_blob = bundle_stream.result()
            cache.write_text(
                json.dumps(
                    {
                        "digest": bundle_blob.digest,
                        "diff_id": bundle_blob.diff_id,
                        "size": bundle_blob.size,
                    }
                ),
                encoding="utf-8",
            )
    added.append((bundle_blob, f"COPY bundle /{MODEL_DIR}"))

    spec = image_spec(
        bundle,
        version=version,
        endpoint=endpoint,
        base_name=base.name,
        base_digest=base.digest,
        labels=labels,
        python=python.executable,
    )
    config = compose_config(base, spec, added)
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    if dst.blob_exists(repo, config_digest):
        dst.stats.skipped.append(config_digest)
    else:
        dst.upload(repo, config_digest, config, len(config))
    manifest = compose_manifest(base, config_digest, len(config), [b for b, _ in added])
    digest = dst.put_manifest(
        repo, f"sha256:{hashlib.sha256(manifest).hexdigest()}", manifest, base.media_type
    )
    dst.put_manifest(repo, tag, manifest, base.media_type)  # the tag goes last
    log.info(
        "pushed %s:%s (%s): %d blobs uploaded (%d bytes), %d skipped, %d mounted",
        target.name,
        tag,
        digest,
        len(dst.stats.uploaded),
        dst.stats.uploaded_bytes,
        len(dst.stats.skipped),
        len(dst.stats.mounted),
    )
    return BuildResult(f"{target.original.strip()}@{digest}", tag, dst.stats)


def _file_chunks(blob: LayerBlob) -> Iterator[bytes]:
    assert blob.path is not None
    with open(blob.path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def image_spec(
    bundle: Bundle,
    *,
    version: str,
    endpoint: str,
    base_name: str,
    base_digest: str,
    labels: dict[str, str],
    python: str = "python3",
) -> ImageSpec:
    """The Env, labels and entrypoint every mlshift image has, whichever builder made it."""
    created = str(bundle.manifest.get("created") or "1970-01-01T00:00:00Z")
    try:
        created = datetime.fromisoformat(created).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        created = "1970-01-01T00:00:00Z"
    labels = {
        **labels,
        "org.opencontainers.image.title": endpoint,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": base_name,
        **({"org.opencontainers.image.base.digest": base_digest} if base_digest else {}),
        "org.opencontainers.image.description": (
            f"mlshift model server for {endpoint} {version}"
            f" ({bundle.manifest.get('flavor', 'model')})"
        ),
        "io.mlshift.model.sha256": bundle.sha256,
        "io.mlshift.version": version,
        "io.mlshift.endpoint": endpoint,
    }
    env = {
        "MLSHIFT_MODEL_DIR": f"/{MODEL_DIR}",
        "MLSHIFT_MODEL_NAME": endpoint,
        "MLSHIFT_MODEL_VERSION": version,
        "PYTHONPATH": f"/{SERVER_DIR}:/{DEPS_DIR}",
        "PYTHONUNBUFFERED": "1",
        "PORT": "8080",
    }
    return ImageSpec(
        env=env, labels=labels, created=created, entrypoint=(python, "-m", "model_server")
    )
