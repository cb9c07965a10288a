"""Serving benchmark: model_server (1 worker, auto workers) vs MLServer, KServe, BentoML, one run.

A RandomForestClassifier (50 trees, depth 8, 20 float features) served by each server over
loopback, driven by ``wrk`` (Debian) with a Lua script for the POST body: single-row and 32-row
requests at 1, 16 and 64 connections. Baselines measured in the same run: the in-process
``model.predict`` rate, MLServer 1.7 (scikit-learn runtime, 2 workers), KServe 0.21's
``ModelServer`` (1 and 2 workers) and a minimal BentoML 1.4 service (2 workers), each installed
on first use into its own venv under benchmarks/.work/venvs (see ``benchmarks/peers.py``), and
model_server as it was before ``--workers`` (commit ``BEFORE_COMMIT``, from ``git archive``), the
baseline for "``--workers 1`` is no slower than before".

For model_server the run also records the batch sizes formed (``mlshift_batch_size`` from
/metrics around each cell), how evenly the workers shared the CPU (SO_REUSEPORT vs the parent's
handoff) and the memory of each process.

Run: ``.venv/bin/python -m benchmarks serving`` (or ``benchmarks/serving.py [--duration 10]``);
the tables go to benchmarks/results/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peers

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results" / "serving.md"
CONNECTIONS = (1, 16, 64)
ROWS = (1, 32)
OURS = "mlshift model_server"
BEFORE_COMMIT = "29d83f9"
"""model_server as it was before ``--workers`` (issue 16's "today"): the `--workers 1` baseline."""
BEFORE = f"{OURS} before --workers ({BEFORE_COMMIT})"


@dataclass
class Run:
    server: str
    rows: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    batch: float | None = None  # mean rows per predict call (model_server)
    busiest: float | None = None  # the busiest worker's share of the workers' CPU time
    round: int | None = None  # the A/B round (interleaved runs only)
    loop_us: float | None = None  # event-loop CPU per request, µs (interleaved runs only)

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows


@dataclass
class Memory:
    server: str
    processes: int
    rss_mib: float
    uss_mib: float
    per_worker: list[tuple[float, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train() -> tuple[Any, np.ndarray[Any, Any]]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 20))
    y = (X[:, :5].sum(axis=1) + rng.normal(scale=0.5, size=5000) > 0).astype(np.int64)
    model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(X, y)
    return model, X


def in_process(model: Any, X: np.ndarray[Any, Any], seconds: float) -> dict[int, float]:
    """Rows per second of ``model.predict`` in-process, by rows per call."""
    rates = {}
    for n in (1, 32, 64, 256):
        batch = X[:n]
        model.predict(batch)
        calls, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            model.predict(batch)
            calls += 1
        rates[n] = calls * n / seconds
    return rates


def _ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``3.1ms``, ``1.2s``, ``1.5m``) in ms; NaN when it had none."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:  # e.g. "-nanus" when no request completed
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str, body: dict[str, Any], connections: int, seconds: float, cpus: set[int] | None = None
) -> tuple[float, float, float, int]:
    script = WORK / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    # One wrk thread leaves the other core(s) to the server under test (2-core machines).
    out = subprocess.run(
        [*_pin(cpus), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "10s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "Thread Stats" columns end in percentages too (a "+/- Stdev" of 71.99 %).
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?timeout (\d+)"):
        match = re.search(pattern, out)
        errors += int(match.group(1)) if match else 0
    return rps, p50, p99, errors


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def _pin(cpus: set[int] | None) -> list[str]:
    """A command prefix that keeps the program (and every thread it starts) on ``cpus``."""
    return [] if cpus is None else ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


@contextmanager
def running(
    cmd: list[str], ready_url: str, env: dict[str, str], log: Path, cpus: set[int] | None = None
) -> Iterator[int]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [*_pin(cpus), *cmd], env={**os.environ, **env}, stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(ready_url, proc)
        yield proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # servers fork workers: stop the whole group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _batch_totals(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^mlshift_batch_size_(sum|count)\{[^}]*\} (\S+)$", text, re.M)
    }
    return found.get("sum", 0.0), found.get("count", 0.0)


def _mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean rows per predict call between two ``_batch_totals`` readings (None: no call)."""
    calls = after[1] - before[1]
    return (after[0] - before[0]) / calls if calls else None


def _loop_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread: model_server's event loop (one worker)."""
    main = next(t for t in psutil.Process(pid).threads() if t.id == pid)
    return float(main.user_time + main.system_time)


def _worker_cpu(pid: int) -> dict[int, float]:
    times = {}
    for child in psutil.Process(pid).children():
        with_times = child.cpu_times()
        times[child.pid] = with_times.user + with_times.system
    return times


def _memory(label: str, pid: int, ours: bool) -> Memory:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    rss = uss = 0.0
    per_worker = []
    for p in procs:
        info = p.memory_full_info()
        rss += info.rss / 2**20
        uss += info.uss / 2**20
        if ours and p.pid != pid:
            per_worker.append((info.rss / 2**20, info.uss / 2**20))
    if ours and not per_worker:  # one worker: the process itself
        info = procs[0].memory_full_info()
        per_worker.append((info.rss / 2**20, info.uss / 2**20))
    return Memory(label, len(procs), rss, uss, per_worker)


def measure(
    peer: peers.Peer, port: int, X: np.ndarray[Any, Any], seconds: float, ours: bool = False
) -> tuple[list[Run], Memory]:
    url = f"http://127.0.0.1:{port}"
    runs: list[Run] = []
    log = WORK / f"{re.sub(r'[^a-z0-9]+', '-', peer.label.lower())}.log"
    with running(peer.cmd, f"{url}{peer.ready_path}", peer.env, log) as pid:
        for rows in ROWS:
            body = peer.body(X[100 : 100 + rows].tolist())
            for c in CONNECTIONS:
                wrk(f"{url}{peer.infer_path}", body, c, 1)  # warm-up
                before = _batch_totals(url) if ours else (0.0, 0.0)
                cpu_before = _worker_cpu(pid) if ours else {}
                result = wrk(f"{url}{peer.infer_path}", body, c, seconds)
                run = Run(peer.label, rows, c, *result)
                if ours:
                    run.batch = _mean_batch(before, _batch_totals(url))
                    cpu = _worker_cpu(pid)
                    used = [cpu[p] - cpu_before.get(p, 0.0) for p in cpu]
                    if len(used) > 1 and sum(used) > 0:
                        run.busiest = max(used) / sum(used)
                runs.append(run)
        memory = _memory(peer.label, pid, ours)
    return runs, memory


AB_ROUNDS, AB_PAIRS = 4, 3
AB_MAX_SECONDS = 5.0
"""The A/B's cells run ``--duration`` seconds, at most this long (it has many cells)."""
AB_CELLS = ((1, 1), (1, 16), (1, 64), (32, 64))
"""(rows, connections) measured again, before and now alternating: ``AB_PAIRS`` pairs in each of
``AB_ROUNDS`` rounds."""


def ab_cpus() -> tuple[set[int] | None, set[int] | None]:
    """Where the A/B pins the servers and wrk: the first two CPUs this process may use, each
    to its own (unpinned with one). Unpinned, a one-worker server moves between cores and at
    16 connections its batches split into groups of 8 or merge into larger ones from one run
    to the next, which swamps a few per cent either way."""
    usable = sorted(os.sched_getaffinity(0))
    return ({usable[1]}, {usable[0]}) if len(usable) >= 2 else (None, None)


def interleaved(
    servers: list[Callable[[int], peers.Peer]],
    X: np.ndarray[Any, Any],
    seconds: float,
    rounds: int = AB_ROUNDS,
) -> list[Run]:
    """Both servers up at once (fresh processes every round), and each cell measured on one
    then the other, ``AB_PAIRS`` times, the order reversed every other time: this machine's
    speed drifts by ±15 % over minutes, and adjacent cells see the same drift, so each pair
    gives one ratio. The servers run on one CPU and wrk on another (``ab_cpus``); the
    batch sizes formed and the event loop's CPU per request are recorded beside the
    throughput."""
    server_cpus, wrk_cpus = ab_cpus()
    runs: list[Run] = []
    for k in range(rounds):
        with contextlib.ExitStack() as stack:
            up = []
            for make in servers:
                port = free_port()
                peer = make(port)
                url = f"http://127.0.0.1:{port}"
                log = WORK / f"ab-{re.sub(r'[^a-z0-9]+', '-', peer.label.lower())}.log"
                ready = f"{url}{peer.ready_path}"
                pid = stack.enter_context(running(peer.cmd, ready, peer.env, log, server_cpus))
                up.append((peer, url, pid))
            for rows, c in AB_CELLS:
                for j in range(AB_PAIRS):
                    for peer, url, pid in up if j % 2 == 0 else up[::-1]:
                        body = peer.body(X[100 : 100 + rows].tolist())
                        wrk(f"{url}{peer.infer_path}", body, c, 1, wrk_cpus)  # warm-up
                        before, loop_before = _batch_totals(url), _loop_cpu(pid)
                        result = wrk(f"{url}{peer.infer_path}", body, c, seconds, wrk_cpus)
                        run = Run(peer.label, rows, c, *result, round=k * AB_PAIRS + j)
                        run.batch = _mean_batch(before, _batch_totals(url))
                        loop_after = _loop_cpu(pid)
                        if run.rps:
                            run.loop_us = (loop_after - loop_before) / (run.rps * seconds) * 1e6
                        runs.append(run)
        sys.stderr.write(f"A/B round {k + 1}/{rounds}\n")
    return runs


def paired_ratio(now: list[Run], then: list[Run]) -> tuple[float, float, float]:
    """The geometric mean of the paired cells' now/before throughput ratios, with its 95 % interval
    (Student's t on the log ratios).

    Example:
        >>> a = [Run("a", 1, 1, 110.0, 0, 0, 0, round=k) for k in range(3)]
        >>> b = [Run("b", 1, 1, 100.0, 0, 0, 0, round=k) for k in range(3)]
        >>> [round(x, 2) for x in paired_ratio(a, b)]
        [1.1, 1.1, 1.1]
    """
    from scipy.stats import t

    before = {r.round: r.rps for r in then}
    logs = [np.log(r.rps / before[r.round]) for r in now if before.get(r.round)]
    mean = float(np.mean(logs))
    half = float(t.ppf(0.975, len(logs) - 1) * np.std(logs, ddof=1) / np.sqrt(len(logs)))
    return float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half))


def model_server(bundle: Path, port: int, workers: int, balance: str) -> peers.Peer:
    label = f"{OURS} (1 worker)" if workers == 1 else f"{OURS} ({workers} workers, {balance})"
    cmd = [sys.executable, "-m", "model_server", "--model-dir", str(bundle),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--balance", balance]  # fmt: skip
    return peers.Peer(
        label, cmd, {"PYTHONPATH": str(ROOT)}, "/v2/health/ready", "/v2/models/rf/infer", "v2"
    )


def before_workers(bundle: Path, port: int) -> peers.Peer:
    """model_server from ``BEFORE_COMMIT`` (``git archive``), serving the same bundle."""
    tree = WORK / f"model_server-{BEFORE_COMMIT}"
    if not (tree / "model_server" / "__main__.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE_COMMIT, "model_server"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    # -P: not the current directory's model_server (this checkout's) ahead of PYTHONPATH.
    cmd = [sys.executable, "-P", "-m", "model_server", "--model-dir", str(bundle),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return peers.Peer(
        BEFORE, cmd, {"PYTHONPATH": str(tree)}, "/v2/health/ready", "/v2/models/rf/infer", "v2"
    )


def _fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


def _medians(
    pair: tuple[list[Run], list[Run]], value: Callable[[Run], float | None]
) -> tuple[float, float]:
    """The median of ``value`` over now's runs and over before's (a missing value counts 0)."""
    now, then = (statistics.median(value(r) or 0.0 for r in runs) for runs in pair)
    return now, then


def _ab_table(ab: list[Run], seconds: float) -> list[str]:
    one = f"{OURS} (1 worker)"
    pairs = len({r.round for r in ab})
    lines = [
        "",
        f"## `--workers 1` against model_server before `--workers` ({BEFORE_COMMIT})",
        "",
        f"{pairs} pairs of {seconds:g} s cells, each cell on one server right after the other"
        f" (both up at once, fresh processes every {AB_PAIRS} pairs, the order reversed every"
        " other pair; the servers pinned to one CPU and wrk to another); requests/s as the"
        " median with the range; now / before as the geometric mean of the paired ratios with"
        " its 95 % interval; rows per predict call and the event loop's CPU per request (µs)"
        " as medians.",
        "",
        "| rows/request | connections | requests/s now | requests/s before | now / before"
        " (95 % interval) | rows per call now / before | loop µs per request now / before"
        " | p99 ms now | p99 ms before |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, c in AB_CELLS:
        cell = {
            label: [r for r in ab if r.server == label and (r.rows, r.connections) == (rows, c)]
            for label in (one, BEFORE)
        }
        if not all(len(runs) > 1 for runs in cell.values()):
            continue
        pair = (cell[one], cell[BEFORE])
        now, then = _medians(pair, lambda r: r.rps)
        p99_now, p99_then = _medians(pair, lambda r: r.p99_ms)
        span_now = f"{min(r.rps for r in cell[one]):.0f}–{max(r.rps for r in cell[one]):.0f}"
        span_then = f"{min(r.rps for r in cell[BEFORE]):.0f}–{max(r.rps for r in cell[BEFORE]):.0f}"
        ratio, low, high = paired_ratio(cell[one], cell[BEFORE])
        batch_now, batch_then = _medians(pair, lambda r: r.batch)
        loop_now, loop_then = _medians(pair, lambda r: r.loop_us)
        lines.append(
            f"| {rows} | {c} | {now:.0f} ({span_now}) | {then:.0f} ({span_then})"
            f" | {ratio:.2f}× ({low:.2f}–{high:.2f}) | {batch_now:.1f} / {batch_then:.1f}"
            f" | {loop_now:.0f} / {loop_then:.0f} | {p99_now:.1f} | {p99_then:.1f} |"
        )
    lines += [
        "",
        "With one worker the model call and the event loop's work for each request share one"
        " GIL, so requests/s is about rows per call / (model call + rows per call × loop time per"
        " request): the loop's CPU per request is the part that can differ between the two, the"
        " rows per call (the same batching policy) and the model call (the same model) are"
        " not. Unpinned, the rows per call at 16 connections change from run to run (groups"
        " of 8 alternate, or merge into larger ones), and that swamps a few per cent either way.",
    ]
    return lines


def report(
    rates: dict[int, float],
    runs: list[Run],
    *,
    memory: list[Memory],
    missing: list[str],
    seconds: float,
    auto: str,
    ab: list[Run] | None = None,
) -> str:
    lines = [
        "# Serving benchmark",
        "",
        "RandomForestClassifier (50 trees, depth 8, 20 float features); single-row and 32-row"
        f" requests, `wrk -t1` for {seconds:g} s per cell over loopback, {os.cpu_count()} CPUs,"
        " all measured in one run by `benchmarks/serving.py`. model_server speaks v2 JSON,"
        " MLServer v2, KServe v1 (`instances`), BentoML its own JSON (`instances`).",
        "",
        "In-process `predict` (rows/s by rows per call): "
        + ", ".join(f"{n} → {r:.0f}" for n, r in rates.items())
        + ".",
        "",
        "| server | rows/request | connections | requests/s | rows/s | p50 ms | p99 ms | errors"
        " | rows per predict | busiest worker's CPU share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.server} | {r.rows} | {r.connections} | {r.rps:.0f} | {r.rows_per_s:.0f}"
            f" | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {_fmt(r.batch, '{:.1f}')}"
            f" | {_fmt(r.busiest, '{:.0%}')} |"
        )
    for note in missing:
        lines.append(f"\nNot measured: {note}")
    ours = [r for r in runs if r.server == auto]
    if ab:
        lines += _ab_table(ab, min(seconds, AB_MAX_SECONDS))
    theirs = [r for r in runs if not r.server.startswith(OURS)]
    lines += [
        "",
        f"## Goals at 64 connections ({auto} vs the best peer, same run)",
        "",
        "| rows/request | ours | best peer | × best peer | best peer p99 / ours | goal |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for rows, goal in ((1, "≥ 10× req/s, p99 ≤ 1/10"), (32, "≥ 1.3× rows/s, lower p99")):
        mine = next((r for r in ours if r.rows == rows and r.connections == 64), None)
        peer = max(
            (r for r in theirs if r.rows == rows and r.connections == 64),
            key=lambda r: r.rows_per_s,
            default=None,
        )
        if mine is None or peer is None or not (mine.rps and peer.rps and mine.p99_ms):
            continue
        lines.append(
            f"| {rows} | {mine.rows_per_s:.0f} rows/s, p99 {mine.p99_ms:.1f} ms"
            f" | {peer.server}: {peer.rows_per_s:.0f} rows/s, p99 {peer.p99_ms:.1f} ms"
            f" | {mine.rows_per_s / peer.rows_per_s:.1f}× | {peer.p99_ms / mine.p99_ms:.1f}×"
            f" | {goal} |"
        )
    lines += [
        "",
        "## Memory after the run (resident / unique, MiB)",
        "",
        "| server | processes | RSS total | USS total | per model_server worker (RSS / USS) |",
        "|---|---:|---:|---:|---|",
    ]
    for m in memory:
        workers = ", ".join(f"{a:.0f} / {b:.0f}" for a, b in m.per_worker)
        lines.append(
            f"| {m.server} | {m.processes} | {m.rss_mib:.0f} | {m.uss_mib:.0f} | {workers} |"
        )
    lines += [
        "",
        "USS is what a worker adds (its own pages); RSS also counts pages shared with the"
        " parent after fork. Size a pod's memory limit as about the parent's RSS plus one"
        " worker's USS per CPU; `--workers auto` budgets 160 MiB plus twice the model file per"
        " worker and spends at most 80 % of the memory limit.",
        "",
        "Rows per predict is the mean batch the adaptive batcher formed (mlshift_batch_size);"
        " the busiest worker's CPU share is 50 % when two workers split the work evenly.",
        "",
        f"Load average when the run ended: {os.getloadavg()[0]:.1f} (other work on the machine"
        " slows every server alike; compare within the run, not across runs).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk cell")
    parser.add_argument("--workers", type=int, default=None, help="model_server auto workers")
    parser.add_argument("--skip-peers", action="store_true", help="only model_server")
    parser.add_argument("--report-only", action="store_true", help="redo the last report")
    parser.add_argument(
        "--ab-rounds", type=int, default=AB_ROUNDS, help="rounds of the --workers 1 A/B"
    )
    parser.add_argument(
        "--ab-only", action="store_true", help="only the --workers 1 A/B, printed, not saved"
    )
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((WORK / "serving-runs.json").read_text())
        text = report(
            {int(k): v for k, v in saved["rates"].items()},
            [Run(**r) for r in saved["runs"]],
            memory=[Memory(**m) for m in saved["memory"]],
            missing=saved["missing"],
            seconds=saved["seconds"],
            auto=saved["auto"],
            ab=[Run(**r) for r in saved.get("ab", [])],
        )
        RESULTS.write_text(text)
        sys.stdout.write(text)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    import joblib

    from mlshift._bundle import write_bundle
    from model_server._capacity import auto_workers, model_bytes, read_capacity

    model, X = train()
    bundle = write_bundle(model, "v1", sample=X[:5], dest=WORK / "rf-bundle", name="rf").path
    ab_servers: list[Callable[[int], peers.Peer]] = [
        lambda p: before_workers(bundle, p),
        lambda p: model_server(bundle, p, 1, "handoff"),
    ]
    ab_seconds = min(args.duration, AB_MAX_SECONDS)
    if args.ab_only:
        ab = interleaved(ab_servers, X, ab_seconds, args.ab_rounds)
        sys.stdout.write("\n".join(_ab_table(ab, ab_seconds)) + "\n")
        return
    rates = in_process(model, X, 2.0)
    model_file = WORK / "rf.joblib"
    joblib.dump(model, model_file)
    workers = args.workers or max(2, auto_workers(read_capacity(), model_bytes(bundle)))
    runs: list[Run] = []
    memory: list[Memory] = []
    servers: list[tuple[Callable[[int], peers.Peer], bool]] = [
        (lambda p: before_workers(bundle, p), True),
        (lambda p: model_server(bundle, p, 1, "reuseport"), True),
        (lambda p: model_server(bundle, p, workers, "reuseport"), True),
        (lambda p: model_server(bundle, p, workers, "handoff"), True),
    ]
    if not args.skip_peers:
        servers += [
            (lambda p: peers.mlserver(model_file, p, (free_port(), free_port()), 2), False),
            (lambda p: peers.kserve(model_file, p, (free_port(), free_port()), 1), False),
            (lambda p: peers.kserve(model_file, p, (free_port(), free_port()), 2), False),
            (lambda p: peers.bentoml(model_file, p, (free_port(), free_port()), 2), False),
        ]
    missing = []
    for make, ours in servers:
        port = free_port()
        try:
            peer = make(port)
            got, mem = measure(peer, port, X, args.duration, ours=ours)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            missing.append(f"{exc}")
            continue
        runs += got
        memory.append(mem)
        sys.stderr.write(f"measured {peer.label}\n")
    ab = interleaved(ab_servers, X, ab_seconds, args.ab_rounds)
    sys.stderr.write("measured --workers 1 against before, interleaved\n")
    auto = f"{OURS} ({workers} workers, handoff)"  # the default balance
    # The raw cells first, so a failing report loses nothing (``--report-only`` redoes it).
    (WORK / "serving-runs.json").write_text(
        json.dumps({
            "rates": rates, "runs": [r.__dict__ for r in runs],
            "memory": [m.__dict__ for m in memory], "missing": missing,
            "seconds": args.duration, "auto": auto, "ab": [r.__dict__ for r in ab],
        })
    )  # fmt: skip
    text = report(
        rates, runs, memory=memory, missing=missing, seconds=args.duration, auto=auto, ab=ab
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
