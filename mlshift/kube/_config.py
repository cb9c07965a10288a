"""Finding the cluster the way kubectl does, without touching the network.

Order: an explicit ``kubeconfig=`` (one path or several), else ``$KUBECONFIG`` (a
``:``-separated list, merged: the first file that names a cluster, user, context or the
current context wins), else ``~/.kube/config``, else the in-cluster service account (a
notebook running in a pod: ``$KUBERNETES_SERVICE_HOST`` plus the token, CA and namespace
files under ``/var/run/secrets/kubernetes.io/serviceaccount``). As with kubectl, a set
``$KUBECONFIG`` replaces ``~/.kube/config`` rather than adding to it.

The namespace comes from the argument, ``$MLSHIFT_NAMESPACE``, the chosen context, the
service account's ``namespace`` file, or ``default``. Nothing is found: a ``ConfigError``
listing every place searched. Discovery only reads local files; the ``ApiClient`` is built
by ``ClusterConfig.api_client()`` when the engine first calls the API.

The ``kubernetes`` package is the optional extra ``mlshift[kubernetes]``: it is imported
only there (through ``import_kubernetes``), so targets, dry runs and ``render()`` work
without it, and a missing package is a ``ConfigError`` saying how to install it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mlshift._exceptions import ConfigError

__all__ = [
    "MISSING_CLIENT",
    "SERVICE_ACCOUNT_DIR",
    "ClusterConfig",
    "discover",
    "import_kubernetes",
    "kubeconfig_paths",
]

MISSING_CLIENT = (
    "the Kubernetes target needs the kubernetes package: pip install 'mlshift[kubernetes]'"
    " (dry runs and render() work without it)"
)


def import_kubernetes(module: str = "kubernetes.client") -> ModuleType:
    """Import a module of the optional ``kubernetes`` client, or raise ``ConfigError``.

    Example:
        >>> import_kubernetes("kubernetes.client.exceptions").ApiException.__name__
        'ApiException'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{MISSING_CLIENT} ({exc})") from exc


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KubeconfigArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


@dataclass(frozen=True)
class ClusterConfig:
    """A discovered cluster: where it is, how to log in, which namespace to use.

    ``source`` is ``"kubeconfig"`` or ``"in-cluster"``; ``paths`` are the kubeconfig files
    merged (empty in-cluster); ``searched`` says where discovery looked, for messages.
    """

    source: str
    server: str
    namespace: str
    context: str | None = None
    paths: tuple[str, ...] = ()
    service_account_dir: Path | None = None
    searched: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def api_client(self) -> Any:
        """Build a ``kubernetes.client.ApiClient`` for this cluster (reads credentials).

        Example:
            >>> discover().api_client()  # doctest: +SKIP
            <kubernetes.client.api_client.ApiClient object at ...>
        """
        client = import_kubernetes("kubernetes.client")
        ConfigException = import_kubernetes("kubernetes.config.config_exception").ConfigException

        configuration = client.Configuration()
        try:
            if self.source == "in-cluster":
                from kubernetes.config.incluster_config import InClusterConfigLoader

                sa = self.service_account_dir or SERVICE_ACCOUNT_DIR
                InClusterConfigLoader(  # type: ignore[no-untyped-call]
                    token_filename=str(sa / "token"),
                    cert_filename=str(sa / "ca.crt"),
                    environ=dict(self.environ),
                ).load_and_set(configuration)
            else:
                from kubernetes.config import load_kube_config

                load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.pathsep.join(self.paths),
                    context=self.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cannot load credentials for {self.describe()}: {exc}; check the file with"
                " `kubectl config view`, or pass kubeconfig=/context= to mlshift.Kubernetes()"
            ) from exc
        return client.ApiClient(configuration=configuration)

    def describe(self) -> str:
        """One line for people: ``context kind-ml in /home/me/.kube/config``."""
        if self.source == "in-cluster":
            return f"the in-cluster service account ({self.server})"
        return f"context {self.context!r} in {', '.join(self.paths)} ({self.server})"


def _split(value: KubeconfigArg) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [p for p in os.fspath(value).split(os.pathsep) if p]
    return [os.fspath(p) for p in value if os.fspath(p)]


def kubeconfig_paths(
    kubeconfig: KubeconfigArg = None, *, environ: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Return (the kubeconfig files to merge, a description of what was searched).

    Example:
        >>> kubeconfig_paths(environ={"HOME": "/nowhere"})[1]
        ['~/.kube/config (/nowhere/.kube/config): not found']
    """
    env = os.environ if environ is None else environ
    searched: list[str] = []
    explicit = _split(kubeconfig)
    if explicit:
        missing = [p for p in explicit if not Path(p).expanduser().is_file()]
        if missing:
            raise ConfigError(
                f"kubeconfig file(s) {', '.join(missing)} not found; pass an existing file"
                " as kubeconfig=, or leave it out to use $KUBECONFIG or ~/.kube/config"
            )
        return [str(Path(p).expanduser()) for p in explicit], [f"kubeconfig={kubeconfig}"]
    if env.get("KUBECONFIG"):
        listed = _split(env["KUBECONFIG"])
        found = [str(Path(p).expanduser()) for p in listed if Path(p).expanduser().is_file()]
        searched.append(f"$KUBECONFIG={env['KUBECONFIG']}" + ("" if found else ": no such files"))
        return found, searched
    home = Path(env.get("HOME") or Path.home())
    default = home / ".kube" / "config"
    if default.is_file():
        return [str(default)], [f"~/.kube/config ({default})"]
    searched.append(f"~/.kube/config ({default}): not found")
    return [], searched


def _merge(paths: Sequence[str]) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does: the first definition of each name wins."""
    import yaml

    merged: dict[str, Any] = {"clusters": {}, "contexts": {}, "users": {}, "current-context": ""}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read kubeconfig {path}: {exc}; fix the file or point KUBECONFIG elsewhere"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping; is it a kubeconfig file?")
        for key in ("clusters", "contexts", "users"):
            for item in data.get(key) or ():
                if isinstance(item, dict) and item.get("name"):
                    merged[key].setdefault(item["name"], item.get(key[:-1]) or {})
        if not merged["current-context"] and data.get("current-context"):
            merged["current-context"] = data["current-context"]
    return merged


def _read_namespace_file(sa_dir: Path) -> str:
    try:
        return (sa_dir / "namespace").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def discover(
    *,
    kubeconfig: KubeconfigArg = None,
    context: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
) -> ClusterConfig:
    """Find the cluster and namespace to use, reading only local files.

    Args:
        kubeconfig: one kubeconfig path, an ``os.pathsep``-joined list, or a sequence.
        context: the context to use instead of the files' current context.
        namespace: the namespace; overrides ``$MLSHIFT_NAMESPACE`` and the context's.
        environ: the environment to read (default ``os.environ``); tests pass their own.
        service_account_dir: where the in-cluster token, ``ca.crt`` and ``namespace`` are.

    Raises:
        ConfigError: no cluster found (the message lists what was searched), or the named
            context does not exist.

    Example:
        >>> cfg = discover(context="kind-ml")  # doctest: +SKIP
        >>> cfg.server, cfg.namespace  # doctest: +SKIP
        ('https://127.0.0.1:6443', 'default')
    """
    env = dict(os.environ if environ is None else environ)
    wanted_ns = namespace or env.get("MLSHIFT_NAMESPACE") or ""
    paths, searched = kubeconfig_paths(kubeconfig, environ=env)
    if paths:
        merged = _merge(paths)
        name = context or merged["current-context"]
        contexts = merged["contexts"]
        if not name or name not in contexts:
            available = ", ".join(sorted(contexts)) or "none"
            problem = f"context {name!r} is not defined" if name else "no current context is set"
            raise ConfigError(
                f"{problem} in {', '.join(paths)} (contexts: {available}); pass context="
                " to mlshift.Kubernetes() or run `kubectl config use-context NAME`"
            )
        ctx = contexts[name]
        cluster = merged["clusters"].get(ctx.get("cluster", ""), {})
        return ClusterConfig(
            source="kubeconfig",
            server=str(cluster.get("server") or ""),
            namespace=wanted_ns or str(ctx.get("namespace") or "") or "default",
            context=name,
            paths=tuple(paths),
            searched=tuple(searched),
            environ=env,
        )
    sa_dir = Path(service_account_dir)
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if host and (sa_dir / "token").is_file():
        server_host = f"[{host}]" if ":" in host else host
        return ClusterConfig(
            source="in-cluster",
            server=f"https://{server_host}:{port or 443}",
            namespace=wanted_ns or _read_namespace_file(sa_dir) or "default",
            service_account_dir=sa_dir,
            searched=tuple(searched),
            environ=env,
        )
    why = "not set" if not host else f"set, but {sa_dir / 'token'} is missing"
    searched.append(f"in-cluster service account ($KUBERNETES_SERVICE_HOST {why})")
    raise ConfigError(
        "no Kubernetes cluster found; searched: "
        + "; ".join(searched)
        + ". Pass kubeconfig=/context= to mlshift.Kubernetes(), set KUBECONFIG, or run the"
        " notebook in a pod with a service account (dry runs need no cluster)"
    )
