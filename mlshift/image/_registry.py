"""A small OCI distribution client over httpx: the registry side of a daemonless build.

Owns the wire protocol: ``/v2/`` ping, manifests (OCI and Docker v2, indexes and manifest
lists), blob ``HEAD`` / ``GET``, uploads (``POST`` then a monolithic ``PUT``, or a streamed
``PATCH`` whose digest is only known at the end), cross-repo mounts, and the mapping of
registry answers to ``BuildError``s that say what to do. Plain HTTP is used only for loopback
hosts or when asked (``insecure=True``). The ``Location`` of an upload keeps its query string:
the digest is appended, never substituted (distribution needs its ``_state`` parameter).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from mlshift._exceptions import BuildError, RegistryAuthError
from mlshift.image._auth import RegistryAuth
from mlshift.image._reference import is_loopback

__all__ = ["MANIFEST_TYPES", "PushStats", "RegistryClient"]

log = logging.getLogger("mlshift.image")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)


@dataclass
class PushStats:
    """What one build did on the wire: read by tests, benchmarks and the log."""

    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)


def _errors(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        return response.text[:200].strip()


class RegistryClient:
    """Talks to one registry.

    Args:
        registry: host[:port].
        insecure: ``True`` allows plain HTTP to any host; ``None`` allows it for loopback only.
        extra_scopes: token scopes requested alongside challenged ones (cross-repo mounts).

    Example:
        >>> with RegistryClient("127.0.0.1:5000") as reg:  # doctest: +SKIP
        ...     reg.blob_exists("ml/churn", "sha256:...")
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        extra_scopes: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
        plain = insecure is True or (insecure is None and is_loopback(host))
        self.base_url = f"{'http' if plain else 'https'}://{registry}"
        self.auth = RegistryAuth(registry, extra_scopes=extra_scopes)
        self.stats = PushStats()
        self._client = httpx.Client(
            base_url=self.base_url,
            auth=self.auth,
            timeout=httpx.Timeout(120.0, connect=10.0),
            headers={"User-Agent": "mlshift"},
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except RegistryAuthError:
            raise
        except httpx.ConnectError as exc:
            raise BuildError(
                f"cannot reach registry {self.registry} at {self.base_url} ({exc}); check the"
                " host and port, and pass insecure=True if it only speaks plain HTTP"
            ) from exc
        except httpx.HTTPError as exc:
            raise BuildError(
                f"{what} on registry {self.registry} failed: {exc!r}; check the network and"
                " retry (blobs already pushed are skipped the next time)"
            ) from exc

    def _fail(self, response: httpx.Response, what: str, repo: str) -> BuildError:
        detail = _errors(response)
        if response.status_code in (401, 403):
            return self.auth.refused(response, what)
        if response.status_code == 404 and "NAME_UNKNOWN" in detail:
            return BuildError(
                f"repository {repo!r} does not exist on registry {self.registry} ({detail});"
                " check the name, or create the repository first"
            )
        return BuildError(
            f"{what} on registry {self.registry} answered {response.status_code}"
            f" ({detail or 'no details'}); check that {self.registry} is an OCI registry and"
            f" that {repo!r} is right"
        )

    # -- reading ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Check the endpoint speaks the distribution API (and authenticate early)."""
        response = self._send("GET", "/v2/", "GET /v2/")
        if response.status_code >= 400 or "Docker-Distribution-Api-Version" not in response.headers:
            raise BuildError(
                f"{self.base_url}/v2/ answered {response.status_code} without the"
                " Docker-Distribution-Api-Version header: it is not an OCI registry; check the"
                " registry host in the repository"
            )

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """``(body, media type, digest)`` of a manifest, or ``None`` when it does not exist."""
        what = f"GET manifest {repo}:{reference}"
        response = self._send(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            what,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:  # MANIFEST_UNKNOWN or NAME_UNKNOWN: both "not there"
            return None
        if response.status_code >= 400:
            raise self._fail(response, what, repo)
        body = response.content
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if reference.startswith("sha256:") and reference != digest:
            raise BuildError(
                f"registry {self.registry} returned a manifest for {repo}@{reference} whose"
                f" digest is {digest}; the registry or a proxy altered it, do not use it"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return body, media_type, digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        """A small blob (a config), checked against its digest."""
        what = f"GET blob {repo}@{digest}"
        response = self._send("GET", f"/v2/{repo}/blobs/{digest}", what, follow_redirects=True)
        if response.status_code >= 400:
            raise self._fail(response, what, repo)
        if f"sha256:{hashlib.sha256(response.content).hexdigest()}" != digest:
            raise BuildError(f"blob {repo}@{digest} does not match its digest; retry the build")
        return response.content

    @contextmanager
    def stream_blob(self, repo: str, digest: str) -> Iterator[Iterator[bytes]]:
        """Open a blob for streaming (used to copy base layers between registries)."""
        what = f"GET blob {repo}@{digest}"
        request = self._client.build_request("GET", f"/v2/{repo}/blobs/{digest}")
        try:
            response = self._client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise BuildError(f"{what} on {self.registry} failed: {exc!r}; retry") from exc
        try:
            if response.status_code >= 400:
                response.read()
                raise self._fail(response, what, repo)
            yield response.iter_raw(1 << 20)
        finally:
            response.close()

    def blob_exists(self, repo: str, digest: str) -> bool:
        """``HEAD`` the blob: True when the registry already has it in ``repo``."""
        what = f"HEAD blob {repo}@{digest}"
        response = self._send("HEAD", f"/v2/{repo}/blobs/{digest}", what)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise self._fail(response, what, repo)
        return True

    # -- writing ----------------------------------------------------------------------------

    def _start_upload(self, repo: str, params: dict[str, str] | None = None) -> httpx.Response:
        what = f"POST upload {repo}"
        response = self._send("POST", f"/v2/{repo}/blobs/uploads/", what, params=params)
        if response.status_code not in (201, 202):
            raise self._fail(response, what, repo)
        return response

    def mount(self, repo: str, digest: str, source_repo: str) -> bool:
        """Cross-repo mount ``digest`` from ``source_repo``; False when the registry declined."""
        response = self._start_upload(repo, {"mount": digest, "from": source_repo})
        if response.status_code == 201:
            self.stats.mounted.append(digest)
            return True
        self._cancel(response.headers.get("Location"))
        return False

    def _cancel(self, location: str | None) -> None:
        if location:  # best effort: the registry expires abandoned sessions anyway
            try:
                self._client.delete(location)
            except httpx.HTTPError as exc:
                log.debug("could not cancel upload %s: %r", location, exc)

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return f"{location}{'&' if '?' in location else '?'}digest={quote(digest)}"

    def _finish(self, repo: str, location: str, digest: str, **kwargs: Any) -> None:
        what = f"PUT blob {repo}@{digest}"
        response = self._send("PUT", self._with_digest(location, digest), what, **kwargs)
        if response.status_code != 201:
            raise self._fail(response, what, repo)

    def upload(
        self,
        repo: str,
        digest: str,
        content: bytes | Iterable[bytes],
        size: int,
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob whose digest and size are known: ``POST``, then one ``PUT``."""
        location = self._start_upload(repo).headers["Location"]
        body: bytes | Iterable[bytes] = content
        if not isinstance(content, bytes):
            body = _counting(content, on_sent)
        elif on_sent:
            on_sent(len(content))
        self._finish(
            repo,
            location,
            digest,
            content=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        self.stats.uploaded.append(digest)
        self.stats.uploaded_bytes += size

    def upload_stream(
        self,
        repo: str,
        chunks: Iterable[bytes],
        digest_after: Callable[[], str],
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> str:
        """Stream a blob whose digest is known only at its end: ``PATCH`` it, then ``PUT``.

        ``digest_after`` is called once the chunks are exhausted; the blob is committed only
        if it does not raise (the upload session is abandoned otherwise).
        """
        location = self._start_upload(repo).headers["Location"]
        sent = 0

        def counted() -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                if on_sent:
                    on_sent(len(chunk))
                yield chunk

        what = f"PATCH blob {repo}"
        response = self._send(
            "PATCH",
            location,
            what,
            content=counted(),
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 202:
            raise self._fail(response, what, repo)
        digest = digest_after()
        self._finish(repo, response.headers.get("Location", location), digest)
        self.stats.uploaded.append(digest)
        self.stats.uploaded_bytes += sent
        return digest

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        """Push a manifest under a digest or tag; returns its digest."""
        what = f"PUT manifest {repo}:{reference}"
        response = self._send(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            what,
            content=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, what, repo)
        return f"sha256:{hashlib.sha256(body).hexdigest()}"


def _counting(chunks: Iterable[bytes], on_sent: Callable[[int], None] | None) -> Iterator[bytes]:
    for chunk in chunks:
        if on_sent:
            on_sent(len(chunk))
        yield chunk
