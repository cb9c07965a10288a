"""The Docker engine builder: a generated build context, built and pushed by the engine.

Owns ``builder="docker"``: when an engine answers ``docker.from_env().ping()``, mlshift writes
a context (``FROM base``, ``COPY`` the bundle and ``model_server``, ``RUN pip install`` of the
bundle's requirements), builds it with the ``docker`` SDK while streaming the build log to the
``mlshift.image`` logger, and pushes. ``ping()`` can fail with a ``requests`` error rather
than a ``DockerException`` (a TCP ``DOCKER_HOST`` nobody listens on), so both count as "no
engine".
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlshift._exceptions import BuildError
from mlshift.image._auth import find_credentials
from mlshift.image._inputs import (
    MODEL_DIR,
    SERVER_DIR,
    Bundle,
    model_server_entries,
    model_server_requirements,
)
from mlshift.image._pip import DEPS_DIR, checked_specs
from mlshift.image._reference import ImageReference

__all__ = ["build_with_docker", "docker_client"]

log = logging.getLogger("mlshift.image")


def docker_client() -> tuple[Any, str]:
    """``(client, "")`` when a Docker engine answers, else ``(None, why it does not)``."""
    try:
        import docker
        import requests
    except ImportError:
        return None, "the docker package is not installed (pip install 'mlshift[docker]')"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        return None, f"no Docker engine answered ({exc})"
    return client, ""


def _dockerfile(
    bundle: Bundle, base: str, platform: str, env: dict[str, str], labels: dict[str, str]
) -> str:
    # The engine's build cannot see the base's labels, so model_server's runtime packages are
    # always installed next to the bundle's (pip inside the build picks the base's wheels).
    wanted = {**model_server_requirements(), **bundle.requirements}
    requirements = " ".join(checked_specs(dict(sorted(wanted.items()))))
    lines = [f"FROM --platform={platform} {base}", "USER 0"]
    lines.append(f"COPY model_server /{SERVER_DIR}/model_server")
    if requirements:
        lines.append(
            f"RUN python3 -m pip install --no-cache-dir --target /{DEPS_DIR} {requirements}"
        )
    lines.append(f"COPY bundle /{MODEL_DIR}")
    lines += [f"ENV {k}={json.dumps(v)}" for k, v in env.items()]
    lines += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())]
    lines += [
        "EXPOSE 8080",
        "WORKDIR /opt/mlshift",
        "USER 65532:65532",
        'ENTRYPOINT ["python3", "-m", "model_server"]',
    ]
    return "\n".join(lines) + "\n"


def build_with_docker(
    client: Any,
    bundle: Bundle,
    *,
    target: ImageReference,
    tag: str,
    base: str,
    platform: str,
    env: dict[str, str],
    labels: dict[str, str],
) -> str:
    """Build and push with the engine; returns ``repo@sha256:...``."""
    import docker

    with tempfile.TemporaryDirectory(prefix="mlshift-context-") as tmp:
        context = Path(tmp)
        shutil.copytree(bundle.path, context / "bundle")
        entries, _ = model_server_entries()
        root = entries[0].path  # tree_entries lists the package directory first
        for entry in entries:
            if entry.source is not None:
                dest = context / "model_server" / Path(entry.path).relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.source, dest)
        (context / "Dockerfile").write_text(
            _dockerfile(bundle, base, platform, env, labels), encoding="utf-8"
        )
        repository = target.original.strip()
        try:
            for line in client.api.build(
                path=str(context),
                tag=f"{repository}:{tag}",
                platform=platform,
                rm=True,
                decode=True,
            ):
                if "error" in line:
                    raise BuildError(
                        f"docker build failed: {line['error'].strip()}; see the log above"
                    )
                if line.get("stream", "").strip():
                    log.info("docker: %s", line["stream"].rstrip())
            creds, _ = find_credentials(target.registry)
            auth = {"username": creds.username, "password": creds.password} if creds else None
            digest = ""
            for line in client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth
            ):
                if "error" in line:
                    raise BuildError(
                        f"docker push of {repository}:{tag} failed: {line['error'].strip()};"
                        " check the registry name and `docker login`"
                    )
                digest = (line.get("aux") or {}).get("Digest", digest)
        except docker.errors.DockerException as exc:
            raise BuildError(f"the Docker engine failed: {exc}; check `docker info`") from exc
    if not digest:
        raise BuildError(f"docker push of {repository}:{tag} reported no digest; retry")
    return f"{repository}@{digest}"
