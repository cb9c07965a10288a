"""The built image runs: no container runtime, the image's own root file system and config.

A real minimal Debian root file system with Python (``mmdebstrap --variant=minbase``) becomes
an OCI image with ``umoci`` and is pushed to the test registry as the base. It looks like the
default base, ``python:3.X-slim``, where the builder depends on it: no ``io.mlshift.*``
labels, ``PYTHON_VERSION`` in its Env, ``python3`` on its ``PATH`` (``/usr/bin`` here, not
``/usr/local/bin``). ``mlshift.build_image`` builds a real scikit-learn model on it; the result
is pulled with ``skopeo`` and unpacked with ``umoci``, whose runtime ``config.json`` (the OCI
runtime's view of the image config) gives the command, user, environment and working
directory. The command then runs chrooted into the unpacked root file system as the image's
non-root user, ``tritonclient`` gets the model's predictions from it, and SIGTERM drains it.

The Debian root file system takes minutes to build (mostly dpkg unpacking), so its OCI layout
is cached under the system temp directory (``tests/fixtures/debian_rootfs.py``).
Needs root (chroot, setuid), ``mmdebstrap``, ``umoci``, ``skopeo`` and the network to a Debian
mirror (``MLSHIFT_TEST_DEBIAN_MIRROR``, default deb.debian.org) and to PyPI for the wheels.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import mlshift
from tests.fixtures.debian_rootfs import (
    BASE_ENV,
    ToolMissing,
    cache_root,
    debian_python_layout,
    run,
    tool,
)
from tests.fixtures.registry import Registry, free_port

pytestmark = pytest.mark.slow

NONROOT = 65532


def _tool(name: str) -> str:
    # A developer machine without the Debian tools skips, saying which package to install;
    # in CI a skip fails (tests/conftest.py), and .ci/run installs them.
    try:
        return tool(name)
    except ToolMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def debian_base(registry: Registry) -> str:
    """The Debian + python3 base, pushed to the session registry; returns its reference."""
    if os.geteuid() != 0:
        pytest.skip("running an unpacked image as another user needs root (chroot, setuid)")
    try:
        layout, python = debian_python_layout()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    ref = f"{registry.host}/debian/python:{python}"
    run(
        _tool("skopeo"),
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:base",
        f"docker://{ref}",
    )
    return ref


def _unpack(ref: str, dest: Path) -> dict[str, Any]:
    """Pull ``ref`` into an OCI layout, unpack its layers, and return its runtime config.

    ``umoci raw unpack`` skips the mtree manifest of ``umoci unpack`` (a third faster here);
    ``umoci raw runtime-config`` writes the OCI runtime's view of the image config.
    """
    layout, rootfs = dest / "layout", dest / "rootfs"
    umoci = _tool("umoci")
    run(_tool("skopeo"), "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img")
    run(umoci, "raw", "unpack", "--image", f"{layout}:img", str(rootfs))
    config = dest / "config.json"
    run(
        umoci,
        "raw",
        "runtime-config",
        "--image",
        f"{layout}:img",
        "--rootfs",
        str(rootfs),
        str(config),
    )
    shutil.rmtree(layout)
    return json.loads(config.read_text())  # type: ignore[no-any-return]


def _start(rootfs: Path, process: dict[str, Any], env: dict[str, str], log: Path) -> Any:
    """Run the image's process chrooted into ``rootfs`` as its user, like an OCI runtime."""
    uid, gid = int(process["user"]["uid"]), int(process["user"]["gid"])
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        node = rootfs / "dev" / name  # the devices every OCI runtime provides
        node.parent.mkdir(exist_ok=True)
        if not node.exists():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            node.chmod(0o666)
    cwd = process.get("cwd") or "/"

    def enter() -> None:  # runs in the child, before exec: root, then the image's user
        os.chroot(rootfs)
        os.chdir(cwd)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    with open(log, "wb") as out:
        # argv[0] is looked up on the image's PATH inside the chroot, as runc does.
        return subprocess.Popen(
            process["args"],
            env=env,
            preexec_fn=enter,  # noqa: PLW1509 (chroot must come first; no threads of ours)
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_ready(proc: Any, url: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"image process's process exited {proc.returncode}:\n{log.read_text()}"
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the image's server was not ready after {timeout} s:\n{log.read_text()}")


def _read_reply(sock: socket.socket) -> tuple[int, Any]:
    """Read one HTTP/1.1 response with a Content-Length; return its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-body: {body!r}"
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


@pytest.fixture
def unpacked(tmp_path: Path) -> Iterator[Path]:
    """A directory for the unpacked image, removed afterwards (it holds a whole root fs)."""
    dest = tmp_path / "image"
    dest.mkdir()
    try:
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.timeout(1800)  # a cold cache builds the Debian root fs: minutes on 2 loaded cores
def test_built_image_serves_from_its_own_root_fs_and_drains(  # noqa: PLR0917 (fixtures)
    registry: Registry,
    debian_base: str,
    rf_model: Any,
    array_data: tuple[Any, Any],
    image_cache: Path,
    unpacked: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Dependency layers are keyed by requirements, Python and platform: keep them between
    # sessions like the root fs, so a second run skips pip (a cold run still builds them).
    monkeypatch.setenv("MLSHIFT_CACHE_DIR", str(cache_root() / "mlshift-cache"))
    started = time.monotonic()
    ref = mlshift.build_image(
        rf_model, "v1", repository=f"{registry.host}/ml/rf", base=debian_base, progress=False
    )
    built = time.monotonic() - started
    runtime = _unpack(ref, unpacked)
    unpacked_at = time.monotonic()
    process = runtime["process"]
    rootfs = unpacked / "rootfs"

    # The config a runtime gets: model_server via the base's python3, as the non-root user.
    assert process["args"] == ["python3", "-m", "model_server"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (NONROOT, NONROOT)
    assert process["cwd"] == "/opt/mlshift"
    env = dict(item.split("=", 1) for item in process["env"])
    assert env["PATH"] == BASE_ENV.split("=", 1)[1]  # the base's Env is kept
    assert env["PYTHON_VERSION"] == debian_base.rsplit(":", 1)[1]
    assert env["MLSHIFT_MODEL_NAME"] == "rf"
    assert env["PORT"] == "8080"
    assert not (rootfs / "usr/local/bin/python3").exists()  # found on PATH, in /usr/bin

    # Like a pod spec's env: loopback and a free port on this shared machine.
    port = free_port()
    env.update(HOST="127.0.0.1", PORT=str(port))
    log = unpacked / "server.log"
    proc = _start(rootfs, process, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        ready_after = time.monotonic() - unpacked_at

        import tritonclient.http as triton

        X = array_data[0][:7]
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        try:
            tensor = triton.InferInput("input-0", list(X.shape), "FP64")
            tensor.set_data_from_numpy(X, binary_data=True)
            result = client.infer("rf", [tensor])
            np.testing.assert_array_equal(result.as_numpy("predict"), rf_model.predict(X))
        finally:
            client.close()

        # SIGTERM with a request in flight: its headers are in, half its body is not.
        body = json.dumps({"instances": X[:2].tolist()}).encode()
        head = (
            f"POST /v1/models/rf:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as held:
            held.sendall(head + body[:10])
            # One full round trip on another connection: the held request has been taken in.
            assert httpx.get(f"{url}/v2/health/live", timeout=10).status_code == 200
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            # With WORKERS=auto the parent logs "draining 2 workers" first; each worker then
            # logs its own readiness line (the held request may be in either).
            drained = "draining: readiness is now false"
            while drained not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert drained in log.read_text()
            assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 503
            held.sendall(body[10:])
            status, answer = _read_reply(held)
        assert status == 200, answer
        assert answer["predictions"] == rf_model.predict(X[:2]).tolist()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    print(  # the timings, visible with -s
        f"\nimage e2e: build+push {built:.1f} s, pull+unpack {unpacked_at - started - built:.1f} s,"
        f" start to ready {ready_after:.1f} s, total {time.monotonic() - started:.1f} s"
    )
