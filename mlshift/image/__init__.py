"""Serving images: build a model's image and push it straight to an OCI registry.

The daemonless builder (the default when no Docker engine answers) appends layers to a base
image the way ko and Jib do. The default base is the official ``python:3.X-slim`` of the
notebook's Python; onto it go (1) the Python packages model_server and the bundle need that the
base lacks (wheels for the base's Python and platform), (2) ``model_server`` when the base lacks
it, (3) the bundle at ``/opt/mlshift/model``, and a config that runs model_server as a non-root
user on port 8080. Layers are
reproducible, so the same bundle gives the same digest, and blobs the registry has are never
sent twice. ``builder="docker"`` builds a generated context with the ``docker`` SDK instead.

Example:
    >>> ref = build_image("bundles/churn-v2", "v2",
    ...                   repository="registry.example.com/ml/churn")  # doctest: +SKIP
    >>> ref                                                            # doctest: +SKIP
    'registry.example.com/ml/churn@sha256:…'
"""

from __future__ import annotations

import logging
import os
import time

from mlshift._exceptions import BuildError
from mlshift._names import check_name
from mlshift.image._builder import BuildResult, build_daemonless, image_spec
from mlshift.image._inputs import open_bundle
from mlshift.image._manifest import parse_platform
from mlshift.image._python import default_base_image
from mlshift.image._reference import image_tag, parse_reference

__all__ = ["DEFAULT_BASE_IMAGE", "BuildResult", "build_image", "build_image_result", "image_tag"]

log = logging.getLogger("mlshift.image")

# The official slim Python image of the notebook's Python (multi-arch, e.g.
# docker.io/library/python:3.11-slim): the builder adds model_server, its dependencies and the
# bundle as layers, so no mlshift-published base is needed. Override with MLSHIFT_BASE_IMAGE
# or base= (an image built from mlshift's Dockerfile skips the layers it already has).
DEFAULT_BASE_IMAGE = default_base_image()
_BUILDERS = ("auto", "daemonless", "docker")


def build_image(
    model_or_bundle: object,
    version: str,
    *,
    repository: str,
    endpoint: str | None = None,
    base: str | None = None,
    platform: str = "linux/amd64",
    builder: str = "auto",
    insecure: bool | None = None,
    progress: bool = True,
    trust_pickle: bool = False,
) -> str:
    """Build the serving image for one model version, push it, return ``repo@sha256:…``.

    Args:
        model_or_bundle: a model object, a bundle directory (with ``mlshift.json``) or a
            ``BundleInfo``.
        version: the version name (a DNS-1123 label), e.g. ``"v2"``.
        repository: where to push, e.g. ``"registry.example.com/ml/churn"`` (no tag).
        endpoint: the endpoint name; defaults to the repository's last path component. The
            image is tagged ``<endpoint>-<version>``.
        base: the base image; defaults to ``$MLSHIFT_BASE_IMAGE`` or ``DEFAULT_BASE_IMAGE``
            (``python:3.X-slim`` of this Python). It must say its Python: the official
            images' ``PYTHON_VERSION`` or the label ``io.mlshift.python``.
        platform: the target platform, ``"linux/amd64"`` or ``"linux/arm64"``.
        builder: ``"auto"`` (Docker when an engine answers, else daemonless),
            ``"daemonless"`` or ``"docker"``.
        insecure: ``True`` allows plain HTTP to any registry; by default only loopback
            registries (127.0.0.1, localhost, ::1) are spoken to in plain HTTP.
        progress: show a progress bar while pushing.
        trust_pickle: a model object of your own class is bundled with cloudpickle, which
            runs its code when loaded; say ``True`` if you trust it (see ``Endpoint.deploy``).

    Returns:
        The digest reference; ``deploy`` uses it, never the mutable tag.

    Raises:
        BuildError: the registry, the base image or a requirement is wrong or unreachable
            (``RegistryAuthError`` for 401/403).
        DigestMismatchError: the bundle's model file does not match its ``mlshift.json``
            (a ``BundleError``); raised before any manifest or tag is pushed.

    Example:
        >>> build_image("bundle-dir", "v2", repository="127.0.0.1:5000/ml/churn",
        ...             base="127.0.0.1:5000/mlshift/base:py3.11")  # doctest: +SKIP
        '127.0.0.1:5000/ml/churn@sha256:…'
    """
    return build_image_result(
        model_or_bundle,
        version,
        repository=repository,
        endpoint=endpoint,
        base=base,
        platform=platform,
        builder=builder,
        insecure=insecure,
        progress=progress,
        trust_pickle=trust_pickle,
    ).reference


def build_image_result(
    model_or_bundle: object,
    version: str,
    *,
    repository: str,
    endpoint: str | None = None,
    base: str | None = None,
    platform: str = "linux/amd64",
    builder: str = "auto",
    insecure: bool | None = None,
    progress: bool = True,
    trust_pickle: bool = False,
) -> BuildResult:
    """Like ``build_image`` but returns a ``BuildResult`` with the tag and push statistics.

    Example:
        >>> result = build_image_result("bundle-dir", "v2",
        ...                             repository="127.0.0.1:5000/churn")  # doctest: +SKIP
        >>> result.stats.uploaded                                         # doctest: +SKIP
    """
    check_name(version, kind="version")
    tagged = image_tag(repository, endpoint, version)
    tag = tagged.rsplit(":", 1)[1]
    endpoint = tag[: -len(version) - 1]
    target = parse_reference(repository)
    base_ref = parse_reference(base or os.environ.get("MLSHIFT_BASE_IMAGE") or DEFAULT_BASE_IMAGE)
    parse_platform(platform)
    if builder not in _BUILDERS:
        raise BuildError(f"builder {builder!r} is unknown; use one of {', '.join(_BUILDERS)}")
    client = None
    if builder in ("auto", "docker"):
        from mlshift.image._docker import docker_client

        client, why = docker_client()
        if client is None and builder == "docker":
            raise BuildError(
                f"builder='docker' needs a Docker engine, but {why}; start Docker or use"
                " builder='daemonless', which needs none"
            )
        if client is None:
            log.info("%s; building without a Docker daemon", why)
    started = time.perf_counter()
    with open_bundle(model_or_bundle, version, trust_pickle=trust_pickle) as bundle:
        if client is not None:
            from mlshift.image._builder import LABEL_SERVER
            from mlshift.image._docker import build_with_docker

            spec = image_spec(
                bundle,
                version=version,
                endpoint=endpoint,
                base_name=str(base_ref),
                base_digest="",
                labels={},
            )
            labels = {**spec.labels, LABEL_SERVER: "docker"}
            reference = build_with_docker(
                client,
                bundle,
                target=target,
                tag=tag,
                base=str(base_ref),
                platform=platform,
                env=spec.env,
                labels=labels,
            )
            from mlshift.image._registry import PushStats

            result = BuildResult(reference, tag, PushStats())
        else:
            result = build_daemonless(
                bundle,
                version,
                target=target,
                tag=tag,
                base=base_ref,
                endpoint=endpoint,
                platform=platform,
                insecure=insecure,
                progress=progress,
            )
    log.info("built %s in %.2f s", result.reference, time.perf_counter() - started)
    return result
