"""Cluster discovery the kubectl way, with real temporary kubeconfig files and environments.

Covers the order (explicit ``kubeconfig=`` > ``$KUBECONFIG`` merged > ``~/.kube/config`` >
in-cluster service account), the merge rule (first definition wins), where the namespace
comes from, and the ``ConfigError`` that lists what was searched. Only local files are read;
the last test builds an ``ApiClient`` from each source without any network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlshift._exceptions import ConfigError
from mlshift.kube._config import discover


def _kubeconfig(path: Path, *contexts: tuple[str, str, str | None], current: str | None) -> Path:
    """Write a kubeconfig with (context, server, namespace) entries."""
    data: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"c-{n}", "cluster": {"server": s}} for n, s, _ in contexts],
        "users": [{"name": f"u-{n}", "user": {"token": "t"}} for n, _, _ in contexts],
        "contexts": [
            {
                "name": n,
                "context": {
                    "cluster": f"c-{n}",
                    "user": f"u-{n}",
                    **({"namespace": ns} if ns else {}),
                },
            }
            for n, _, ns in contexts
        ],
    }
    if current:
        data["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _kubeconfig(
        tmp_path / "home" / ".kube" / "config", ("home", "https://home:6443", None), current="home"
    )
    return tmp_path / "home"


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token", encoding="utf-8")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (sa / "namespace").write_text("notebooks\n", encoding="utf-8")
    return sa


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def test_explicit_kubeconfig_wins_over_everything(tmp_path: Path, home: Path, sa_dir: Path) -> None:
    explicit = _kubeconfig(tmp_path / "explicit", ("ex", "https://ex:6443", "exns"), current="ex")
    env_file = _kubeconfig(tmp_path / "env", ("env", "https://env:6443", None), current="env")
    env = _env(home, KUBECONFIG=str(env_file), KUBERNETES_SERVICE_HOST="10.0.0.1")
    cfg = discover(kubeconfig=str(explicit), environ=env, service_account_dir=sa_dir)
    assert (cfg.source, cfg.server, cfg.context, cfg.namespace) == (
        "kubeconfig",
        "https://ex:6443",
        "ex",
        "exns",
    )


def test_kubeconfig_env_is_merged_first_definition_wins(tmp_path: Path, home: Path) -> None:
    a = _kubeconfig(tmp_path / "a", ("shared", "https://a:6443", "from-a"), current=None)
    b = _kubeconfig(
        tmp_path / "b",
        ("shared", "https://b:6443", "from-b"),
        ("only-b", "https://only-b:6443", None),
        current="shared",
    )
    env = _env(home, KUBECONFIG=f"{a}:{tmp_path / 'missing'}:{b}")
    cfg = discover(environ=env)
    # current-context comes from b (a sets none); the context itself from a (first wins).
    assert (cfg.context, cfg.server, cfg.namespace) == ("shared", "https://a:6443", "from-a")
    assert cfg.paths == (str(a), str(b))
    other = discover(environ=env, context="only-b")
    assert (other.server, other.namespace) == ("https://only-b:6443", "default")


def test_kubeconfig_env_replaces_home_config(tmp_path: Path, home: Path, sa_dir: Path) -> None:
    env_file = _kubeconfig(tmp_path / "env", ("env", "https://env:6443", None), current="env")
    assert discover(environ=_env(home, KUBECONFIG=str(env_file))).server == "https://env:6443"
    assert discover(environ=_env(home)).server == "https://home:6443"


def test_in_cluster_when_no_kubeconfig(tmp_path: Path, sa_dir: Path) -> None:
    env = _env(
        tmp_path / "empty-home", KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443"
    )
    cfg = discover(environ=env, service_account_dir=sa_dir)
    assert (cfg.source, cfg.server, cfg.namespace) == (
        "in-cluster",
        "https://10.96.0.1:443",
        "notebooks",
    )


def test_namespace_argument_then_env_then_context(tmp_path: Path, home: Path, sa_dir: Path) -> None:
    ctx = _kubeconfig(tmp_path / "k", ("k", "https://k:6443", "ctx-ns"), current="k")
    env = _env(home, KUBECONFIG=str(ctx), MLSHIFT_NAMESPACE="env-ns")
    assert discover(environ=env, namespace="arg-ns").namespace == "arg-ns"
    assert discover(environ=env).namespace == "env-ns"
    assert discover(environ=_env(home, KUBECONFIG=str(ctx))).namespace == "ctx-ns"
    in_cluster = _env(
        tmp_path / "none", KUBERNETES_SERVICE_HOST="10.0.0.1", MLSHIFT_NAMESPACE="env-ns"
    )
    assert discover(environ=in_cluster, service_account_dir=sa_dir).namespace == "env-ns"


def test_nothing_found_lists_what_was_searched(tmp_path: Path) -> None:
    env = _env(tmp_path / "nohome", KUBECONFIG=str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError) as info:
        discover(environ=env, service_account_dir=tmp_path / "no-sa")
    text = str(info.value)
    assert "$KUBECONFIG=" in text and "gone.yaml" in text
    assert "in-cluster service account ($KUBERNETES_SERVICE_HOST not set)" in text
    with pytest.raises(ConfigError, match=r"~/\.kube/config \(.*nohome/\.kube/config\): not found"):
        discover(environ=_env(tmp_path / "nohome"), service_account_dir=tmp_path / "no-sa")
    env = _env(tmp_path / "nohome", KUBERNETES_SERVICE_HOST="10.0.0.1")
    with pytest.raises(ConfigError, match="no-sa/token is missing"):
        discover(environ=env, service_account_dir=tmp_path / "no-sa")


def test_bad_explicit_paths_and_contexts_are_config_errors(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        discover(kubeconfig=str(tmp_path / "nope"), environ=_env(home))
    with pytest.raises(ConfigError, match=r"context 'prod' is not defined .* \(contexts: home\)"):
        discover(context="prod", environ=_env(home))
    bare = _kubeconfig(tmp_path / "bare", ("x", "https://x:6443", None), current=None)
    with pytest.raises(ConfigError, match="no current context is set"):
        discover(kubeconfig=bare, environ=_env(home))


def test_api_clients_are_built_from_either_source(tmp_path: Path, home: Path, sa_dir: Path) -> None:
    client = discover(environ=_env(home)).api_client()
    assert client.configuration.host == "https://home:6443"
    env = _env(
        tmp_path / "none", KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443"
    )
    in_cluster = discover(environ=env, service_account_dir=sa_dir).api_client()
    assert in_cluster.configuration.host == "https://10.96.0.1:443"
    assert in_cluster.configuration.api_key["BearerToken"] == "bearer sa-token"


def test_missing_kubernetes_package_is_a_config_error_only_when_the_cluster_is_used(
    tmp_path: Path,
) -> None:
    """Without the optional extra, targets and dry runs work; the first API call says what
    to install. Run in a fresh interpreter where importing ``kubernetes`` fails."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["kubernetes"] = None  # as if `pip install mlshift` without the extra
import mlshift
from mlshift._bundle import BundleInfo
from mlshift._state import EndpointState
target = mlshift.Kubernetes(namespace="ml", registry="r.example.com/ml",
                            kubeconfig={str(tmp_path / "kubeconfig")!r})
info = BundleInfo(path={str(tmp_path)!r}, sha256="ab" * 32, flavor="sklearn", serializer="skops")
print(target.prepare_version(info, "churn", "v1", dry_run=True).image)
engine = target.engine("churn")
try:
    engine.load("churn")
except mlshift.ConfigError as exc:
    print(exc)
"""
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "r.example.com/ml/churn:churn-v1@sha256:<resolved-at-deploy>"
    assert out[1].startswith(
        "the Kubernetes target needs the kubernetes package: pip install 'mlshift[kubernetes]'"
    )
