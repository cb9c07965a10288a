"""Registry credentials and the challenge flow.

Owns where credentials come from and how they are presented:

1. ``MLSHIFT_REGISTRY_USERNAME`` / ``MLSHIFT_REGISTRY_PASSWORD`` (explicit beats implicit);
2. ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: ``credHelpers[registry]``,
   then ``credsStore``, then ``auths[registry].auth`` (base64 ``user:password``), the order
   the Docker CLI uses;
3. none: anonymous, which many registries allow for pulls.

``RegistryAuth`` is an ``httpx.Auth``: it answers a 401's ``WWW-Authenticate`` challenge with
Basic credentials or by fetching a Bearer token from the realm (Docker Hub, GHCR, Harbor, ECR),
then sends that header up front on later requests so streamed uploads are never replayed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlshift._exceptions import RegistryAuthError

__all__ = ["Credentials", "RegistryAuth", "find_credentials", "parse_challenge"]

log = logging.getLogger("mlshift.image")

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class Credentials:
    """A username and secret for one registry, and where they were found.

    ``username == "<token>"`` marks an identity (refresh) token from a credential helper.
    """

    username: str
    password: str = field(repr=False)
    source: str = ""


@dataclass
class _Lookup:
    credentials: Credentials | None
    searched: list[str]


def _docker_config_path() -> Path:
    root = os.environ.get("DOCKER_CONFIG")
    return Path(root) / "config.json" if root else Path.home() / ".docker" / "config.json"


def _keys_for(registry: str) -> tuple[str, ...]:
    if registry in {"registry-1.docker.io", "docker.io", "index.docker.io"}:
        return _HUB_KEYS
    return (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")


def _run_helper(helper: str, server: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        log.warning("credential helper %s is configured but not on PATH; ignoring it", program)
        return None
    except subprocess.TimeoutExpired as exc:
        raise RegistryAuthError(
            f"credential helper {program} did not answer within 30 s for {server};"
            " check that it works with `echo {server} | {program} get`"
        ) from exc
    if done.returncode != 0:  # "credentials not found in native keychain" is normal
        log.debug("%s get %s: %s", program, server, done.stdout.strip() or done.stderr.strip())
        return None
    try:
        answer = json.loads(done.stdout)
        return Credentials(answer["Username"], answer["Secret"], f"{program} ({server})")
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryAuthError(
            f"credential helper {program} answered something that is not"
            " {{'Username', 'Secret'}} JSON; fix or remove it from ~/.docker/config.json"
        ) from exc


def _lookup(registry: str) -> _Lookup:
    searched = ["MLSHIFT_REGISTRY_USERNAME/MLSHIFT_REGISTRY_PASSWORD"]
    user = os.environ.get("MLSHIFT_REGISTRY_USERNAME")
    secret = os.environ.get("MLSHIFT_REGISTRY_PASSWORD")
    if user and secret is not None:
        return _Lookup(Credentials(user, secret, "MLSHIFT_REGISTRY_USERNAME"), searched)
    path = _docker_config_path()
    searched.append(str(path))
    if not path.is_file():
        return _Lookup(None, searched)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryAuthError(
            f"cannot read Docker config {path}: {exc}; fix the file or set DOCKER_CONFIG"
            " to a directory with a valid config.json"
        ) from exc
    keys = _keys_for(registry)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            searched.append(f"docker-credential-{helpers[key]}")
            return _Lookup(_run_helper(helpers[key], key), searched)
    auths = config.get("auths") or {}
    store = config.get("credsStore")
    if store:
        searched.append(f"docker-credential-{store}")
        for key in keys:
            found = _run_helper(store, key)
            if found:
                return _Lookup(found, searched)
    for key in keys:
        entry = auths.get(key) or {}
        if entry.get("identitytoken"):
            return _Lookup(Credentials("<token>", entry["identitytoken"], str(path)), searched)
        if entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError as exc:
                raise RegistryAuthError(
                    f"the auth entry for {key} in {path} is not base64 'user:password';"
                    f" run `docker login {registry}` again"
                ) from exc
            return _Lookup(Credentials(user, secret, f"{path} auths[{key}]"), searched)
    return _Lookup(None, searched)


def find_credentials(registry: str) -> tuple[Credentials | None, list[str]]:
    """Credentials for ``registry`` and the list of places searched (for error messages).

    Example:
        >>> creds, searched = find_credentials("127.0.0.1:5000")
    """
    found = _lookup(registry)
    return found.credentials, found.searched


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``Bearer realm="...",service="..."`` into ``("bearer", {...})``.

    Example:
        >>> parse_challenge('Bearer realm="https://auth.example/token",service="reg"')
        ('bearer', {'realm': 'https://auth.example/token', 'service': 'reg'})
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


class RegistryAuth(httpx.Auth):
    """Answers registry challenges, caching the resulting header per registry.

    Args:
        registry: host[:port], used to find credentials and in error messages.
        extra_scopes: token scopes to ask for along with the challenged one (for example
            pull on the base repository, so a cross-repo mount is allowed).
    """

    requires_response_body = False  # blob bodies stream; only the token answer is read

    def __init__(self, registry: str, *, extra_scopes: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self.extra_scopes = list(extra_scopes)
        self._scopes: list[str] = []  # every scope challenged so far: one token covers all
        self._lookup: _Lookup | None = None
        self._header: str | None = None
        self._lock = threading.Lock()

    def _credentials(self) -> Credentials | None:
        if self._lookup is None:
            self._lookup = _lookup(self.registry)
        return self._lookup.credentials

    def refused(self, response: httpx.Response, what: str) -> RegistryAuthError:
        """The error for a 401/403: names the registry and where credentials were sought."""
        creds = self._credentials()
        searched = ", ".join(self._lookup.searched if self._lookup else [])
        if creds:
            hint = (
                f"credentials for user {creds.username!r} from {creds.source} were refused;"
                f" check them, or `docker login {self.registry}` again"
            )
        else:
            hint = (
                f"no credentials were found (looked in {searched}); run"
                f" `docker login {self.registry}` or set MLSHIFT_REGISTRY_USERNAME and"
                " MLSHIFT_REGISTRY_PASSWORD"
            )
        return RegistryAuthError(
            f"registry {self.registry} answered {response.status_code} to {what}: {hint}"
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header:
            request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self._credentials()
        what = f"{request.method} {request.url.path}"
        if scheme == "basic":
            if creds is None or creds.username == "<token>":
                raise self.refused(response, what)
            raw = f"{creds.username}:{creds.password}".encode()
            header_value = "Basic " + base64.b64encode(raw).decode()
        elif scheme == "bearer" and params.get("realm"):
            token_request = self._token_request(params, creds)
            token_response = yield token_request
            token_response.read()
            if token_response.status_code in (401, 403):
                raise self.refused(token_response, f"the token request to {params['realm']}")
            if token_response.status_code >= 400:
                raise RegistryAuthError(
                    f"token service {params['realm']} for {self.registry} answered"
                    f" {token_response.status_code}: {token_response.text[:200]};"
                    " check the registry's status or your network"
                )
            try:
                body = token_response.json()
                token = body.get("token") or body["access_token"]
            except (ValueError, KeyError, AttributeError) as exc:
                raise RegistryAuthError(
                    f"token service {params['realm']} answered without a token;"
                    " check the registry's auth configuration"
                ) from exc
            header_value = f"Bearer {token}"
        else:
            raise RegistryAuthError(
                f"registry {self.registry} asked for unsupported authentication"
                f" {response.headers.get('WWW-Authenticate', '(none)')!r};"
                " mlshift speaks Basic and Bearer (token) auth"
            )
        with self._lock:
            self._header = header_value
        request.headers["Authorization"] = header_value
        retried = yield request
        if retried.status_code in (401, 403):
            retried.read()
            raise self.refused(retried, what)

    def _token_request(self, params: dict[str, str], creds: Credentials | None) -> httpx.Request:
        with self._lock:
            for scope in [*params.get("scope", "").split(" "), *self.extra_scopes]:
                if scope and scope not in self._scopes:
                    self._scopes.append(scope)
            scopes = list(self._scopes)
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {}
        if creds and creds.username == "<token>":  # OAuth2 refresh token from a helper
            form = {"grant_type": "refresh_token", "refresh_token": creds.password}
            form |= {"service": params.get("service", ""), "scope": " ".join(scopes)}
            form["client_id"] = "mlshift"
            return httpx.Request("POST", params["realm"], data=form)
        if creds:
            raw = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return httpx.Request("GET", params["realm"], params=query, headers=headers)
