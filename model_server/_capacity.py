"""How many workers ``--workers auto`` starts: the CPUs this process may use, capped for memory.

The CPUs come from the cgroup CPU quota where one is set (a pod's CPU limit becomes
``cpu.max`` under cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1), rounded up,
else from the affinity mask (``taskset``, a cpuset), never from the machine's core count alone.
The memory cap keeps every worker's copy of the model inside the memory limit (cgroup
``memory.max`` / ``memory.limit_in_bytes``, else the machine's available memory): each worker is
budgeted ``WORKER_BASE_BYTES`` for the interpreter and libraries plus twice the model file's
size for the model and its batches, and ``MEMORY_SHARE`` of the limit is spent on them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MEMORY_SHARE", "WORKER_BASE_BYTES", "Capacity", "auto_workers", "read_capacity"]

# A worker serving a small scikit-learn model measures 110-130 MiB resident (Python, numpy,
# scikit-learn, uvicorn); budget a little more.
WORKER_BASE_BYTES = 160 * 1024 * 1024
MEMORY_SHARE = 0.8
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Capacity:
    """What the process may use: CPUs (quota or affinity) and memory bytes (limit or available).

    Attributes:
        cpus: CPUs allowed, rounded up (at least 1).
        cpu_source: Where ``cpus`` came from (``"cgroup v2 cpu.max"``, ``"affinity"``...).
        memory_bytes: The memory limit, or ``None`` when neither a limit nor /proc/meminfo says.
        memory_source: Where ``memory_bytes`` came from.
    """

    cpus: int
    cpu_source: str
    memory_bytes: int | None
    memory_source: str


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> cgroup path from ``/proc/self/cgroup`` (``""`` is the v2 unified path)."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _candidates(mount: Path, path: str) -> list[Path]:
    """The cgroup directory and its ancestors; inside a container the mount may be the leaf."""
    dirs: list[Path] = []
    current = mount / path.lstrip("/")
    while True:
        dirs.append(current)
        if current == mount or mount not in current.parents:
            break
        current = current.parent
    if mount not in dirs:
        dirs.append(mount)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_quota(root: Path, paths: dict[str, str]) -> tuple[float, str] | None:
    """The tightest CPU quota (in CPUs) along the cgroup path, and its source."""
    best: tuple[float, str] | None = None
    if "" in paths:
        for d in _candidates(root, paths[""]):
            text = _read(d / "cpu.max")
            if text and not text.startswith("max"):
                quota, _, period = text.partition(" ")
                cpus = int(quota) / int(period or "100000")
                if best is None or cpus < best[0]:
                    best = (cpus, "cgroup v2 cpu.max")
    for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        mount = root / name
        if "cpu" not in paths or not mount.is_dir():
            continue
        for d in _candidates(mount, paths["cpu"]):
            quota_us, period_us = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota_us and period_us and int(quota_us) > 0 and int(period_us) > 0:
                cpus = int(quota_us) / int(period_us)
                if best is None or cpus < best[0]:
                    best = (cpus, "cgroup v1 cpu.cfs_quota_us")
        break
    return best


def _memory_limit(root: Path, paths: dict[str, str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    if "" in paths:
        for d in _candidates(root, paths[""]):
            text = _read(d / "memory.max")
            if text and text.isdigit() and (best is None or int(text) < best[0]):
                best = (int(text), "cgroup v2 memory.max")
    mount = root / "memory"
    if "memory" in paths and mount.is_dir():
        for d in _candidates(mount, paths["memory"]):
            text = _read(d / "memory.limit_in_bytes")
            limit = int(text) if text and text.isdigit() else _UNLIMITED
            if limit < _UNLIMITED and (best is None or limit < best[0]):
                best = (limit, "cgroup v1 memory.limit_in_bytes")
    return best


def _available_memory(meminfo: Path) -> int | None:
    text = _read(meminfo) or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def read_capacity(
    root: str | os.PathLike[str] = "/sys/fs/cgroup",
    proc: str | os.PathLike[str] = "/proc",
    affinity: int | None = None,
) -> Capacity:
    """Read the CPUs and memory this process may use (cgroup limits, else affinity / meminfo).

    ``root`` and ``proc`` point at another tree for tests; ``affinity`` overrides the mask size.

    Example:
        >>> read_capacity().cpus >= 1
        True
    """
    root_dir, proc_dir = Path(root), Path(proc)
    paths = _cgroup_paths(proc_dir / "self" / "cgroup")
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        affinity = affinity or os.cpu_count() or 1
    quota = _cpu_quota(root_dir, paths)
    if quota is not None and math.ceil(quota[0]) < affinity:
        cpus, cpu_source = max(1, math.ceil(quota[0])), quota[1]
    else:
        cpus, cpu_source = affinity, "affinity"
    limit = _memory_limit(root_dir, paths)
    available = _available_memory(proc_dir / "meminfo")
    if limit is not None and (available is None or limit[0] <= available):
        return Capacity(cpus, cpu_source, limit[0], limit[1])
    if available is not None:
        return Capacity(cpus, cpu_source, available, "MemAvailable")
    return Capacity(cpus, cpu_source, None, "unknown")


def model_bytes(model_dir: str | os.PathLike[str]) -> int:
    """Total size of the files in the bundle directory (the model file dominates)."""
    total = 0
    for entry in Path(model_dir).iterdir():
        if entry.is_file():
            total += entry.stat().st_size
    return total


def auto_workers(capacity: Capacity, model_size: int) -> int:
    """Workers for ``capacity`` and a model file of ``model_size`` bytes (at least 1).

    Example:
        >>> auto_workers(Capacity(4, "affinity", 1 << 30, "cgroup v2 memory.max"), 100 << 20)
        2
    """
    if capacity.memory_bytes is None:
        return capacity.cpus
    per_worker = WORKER_BASE_BYTES + 2 * model_size
    fit = int(capacity.memory_bytes * MEMORY_SHARE // per_worker)
    return max(1, min(capacity.cpus, fit))
