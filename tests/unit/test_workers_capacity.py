"""``--workers auto``: CPUs from the cgroup quota or the affinity mask, capped for memory.

The cgroup readers run over real files laid out as cgroup v2 and v1 mounts lay them out
(``/proc/self/cgroup`` naming the process's path, limits set on the leaf or on an ancestor);
the settings parser reads ``--workers`` and ``WORKERS``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server._capacity import (
    WORKER_BASE_BYTES,
    Capacity,
    auto_workers,
    read_capacity,
)
from model_server._settings import parse_settings


def _tree(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(proc_cgroup)
    (proc / "meminfo").write_text("MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root, proc


def test_cgroup_v2_quota_is_rounded_up_and_beats_affinity(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {
            "kubepods/pod1/c1/cpu.max": "150000 100000\n",
            "kubepods/pod1/c1/memory.max": str(2 << 30),
        },
    )
    cap = read_capacity(root, proc, affinity=16)
    assert (cap.cpus, cap.cpu_source) == (2, "cgroup v2 cpu.max")
    assert (cap.memory_bytes, cap.memory_source) == (2 << 30, "cgroup v2 memory.max")


def test_cgroup_v2_limit_on_an_ancestor_counts(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        {"kubepods/pod1/cpu.max": "50000 100000\n", "kubepods/pod1/c1/cpu.max": "max 100000\n"},
    )
    assert read_capacity(root, proc, affinity=8).cpus == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "memory/docker/abc/memory.limit_in_bytes": str(1 << 30),
        },
    )
    cap = read_capacity(root, proc, affinity=8)
    assert (cap.cpus, cap.cpu_source) == (3, "cgroup v1 cpu.cfs_quota_us")
    assert (cap.memory_bytes, cap.memory_source) == (1 << 30, "cgroup v1 memory.limit_in_bytes")


def test_no_quota_means_the_affinity_mask_and_available_memory(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "3:cpu,cpuacct:/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    cap = read_capacity(root, proc, affinity=3)
    assert (cap.cpus, cap.cpu_source) == (3, "affinity")
    assert (cap.memory_bytes, cap.memory_source) == (8000000 * 1024, "MemAvailable")


def test_this_machine_reads_without_error() -> None:
    import os

    cap = read_capacity()
    assert 1 <= cap.cpus <= len(os.sched_getaffinity(0))


def test_memory_caps_the_workers() -> None:
    big_model = 1 << 30
    # 4 CPUs, 2 GiB: each worker needs 160 MiB + 2 GiB, so only one fits.
    assert auto_workers(Capacity(4, "affinity", 2 << 30, "m"), big_model) == 1
    # Plenty of memory: the CPUs decide.
    assert auto_workers(Capacity(4, "affinity", 64 << 30, "m"), big_model) == 4
    # Not even one fits: still one worker.
    assert auto_workers(Capacity(4, "affinity", WORKER_BASE_BYTES, "m"), big_model) == 1
    assert auto_workers(Capacity(3, "affinity", None, "unknown"), big_model) == 3


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, None),
        ([], {"WORKERS": "auto"}, None),
        ([], {"WORKERS": "3"}, 3),
        (["--workers", "1"], {"WORKERS": "4"}, 1),
        (["--workers", "AUTO"], {}, None),
    ],
)
def test_workers_setting(argv: list[str], env: dict[str, str], expected: int | None) -> None:
    settings = parse_settings(["--model-dir", "b", *argv], env=env)
    assert settings.workers == expected
    assert settings.balance == "handoff"


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_workers_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--model-dir", "b", "--workers", value], env={})
    assert "workers" in capsys.readouterr().err


def test_balance_from_environment() -> None:
    settings = parse_settings(["--model-dir", "b"], env={"MLSHIFT_WORKER_BALANCE": "handoff"})
    assert settings.balance == "handoff"


def test_deployment_leaves_workers_to_auto() -> None:
    from mlshift._render import render_deployment
    from mlshift._state import EndpointState, VersionSpec

    state = EndpointState("churn", "ml").with_version(VersionSpec("v1", image="r/c@sha256:1"))
    deployment = render_deployment(state, state.versions[0])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKERS"] == "auto"
    assert container["resources"]["limits"]["cpu"]  # what auto reads back from the cgroup


def test_local_target_runs_one_worker_per_version_unless_asked(tmp_path: Path) -> None:
    from mlshift import Local
    from mlshift._exceptions import InvalidArgumentError

    assert Local(tmp_path).engine("churn").workers == 1
    assert Local(tmp_path, workers=3).engine("churn").workers == 3
    for bad in (0, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="workers"):
            Local(tmp_path, workers=bad)  # type: ignore[arg-type]
