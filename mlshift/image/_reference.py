"""Image references: parse ``[registry/]repository[:tag][@digest]`` the way Docker does.

Owns the one place where ``ubuntu`` becomes ``registry-1.docker.io/library/ubuntu``, where a
host is told apart from a path component, and where the tag of a model image is derived
(``<endpoint>-<version>``). Pure code, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mlshift._exceptions import BuildError
from mlshift._names import check_name

__all__ = [
    "DOCKER_HUB",
    "ImageReference",
    "image_tag",
    "is_loopback",
    "parse_reference",
]

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    Attributes:
        registry: host[:port] as used on the wire (Docker Hub is ``registry-1.docker.io``).
        repository: the path inside the registry, e.g. ``ml/churn`` or ``library/python``.
        tag: the tag, or ``None``.
        digest: ``sha256:...``, or ``None``.
        original: the text the reference was parsed from, for error messages.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    original: str = ""

    @property
    def name(self) -> str:
        """``registry/repository`` as users write it (``docker.io`` for Docker Hub)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{host}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def host(self) -> str:
        """The registry host without its port (``[::1]`` comes back as ``::1``)."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference, raising ``BuildError`` with a hint when it is malformed.

    Example:
        >>> parse_reference("127.0.0.1:5000/ml/churn:v2").repository
        'ml/churn'
        >>> parse_reference("python:3.11-slim").registry
        'registry-1.docker.io'
    """
    if not isinstance(text, str) or not text.strip():
        raise BuildError(
            f"image reference {text!r} is empty; write it as registry/repository[:tag],"
            " for example 'registry.example.com/ml/churn'"
        )
    rest = text.strip()
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise BuildError(
                f"image reference {text!r} has a malformed digest {digest!r};"
                " expected sha256: followed by 64 lower-case hex digits"
            )
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise BuildError(
                f"image reference {text!r} has an invalid tag {tag!r};"
                " tags are up to 128 letters, digits, '_', '.' and '-'"
            )
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or "[" in first):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            raise BuildError(
                f"image reference {text!r} has an invalid repository path {path!r}:"
                " each '/'-separated part must be lower-case letters and digits,"
                " joined by '.', '_' or '-'"
            )
    return ImageReference(registry, path, tag, digest, text)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1``: the only hosts spoken to in plain HTTP.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("registry.example.com")
        (True, False)
    """
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def image_tag(repository: str, endpoint: str | None, version: str) -> str:
    """The tag reference ``build_image`` would push, without building anything.

    The Kubernetes engine calls this in dry runs to show what *would* be pushed. The tag is
    ``<endpoint>-<version>``; ``endpoint`` defaults to the repository's last path component.

    Example:
        >>> image_tag("registry.example.com/ml/churn", None, "v2")
        'registry.example.com/ml/churn:churn-v2'
    """
    ref = parse_reference(repository)
    if ref.tag or ref.digest:
        raise BuildError(
            f"repository {repository!r} carries a tag or digest; pass the bare repository"
            f" (for example {ref.name!r}): mlshift tags images <endpoint>-<version> itself"
        )
    if endpoint is None:
        endpoint = ref.repository.rsplit("/", 1)[-1]
        check_name(endpoint, kind="endpoint (from the repository's last path component)")
    else:
        check_name(endpoint, kind="endpoint")
    check_name(version, kind="version")
    return f"{repository.strip()}:{endpoint}-{version}"
