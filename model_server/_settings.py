"""Server settings: one frozen dataclass, filled from flags, then environment, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from model_server._errors import BundleReadError
from model_server._trust import signing_key

__all__ = ["BALANCES", "SHARED_METRICS_ENV", "Settings", "parse_settings"]

BALANCES = ("reuseport", "handoff")
SHARED_METRICS_ENV = "MLSHIFT_WORKER_METRICS_DIR"
"""Set by a multi-worker parent to the directory where every worker's metric files live."""


@dataclass(frozen=True)
class Settings:
    """How one model_server process runs.

    Attributes:
        model_dir: The bundle directory (``MLSHIFT_MODEL_DIR``; ``/opt/mlshift/model`` in images).
        host: Interface to bind (``HOST``); ``0.0.0.0`` so a pod is reachable, the local mesh
            passes ``127.0.0.1``.
        port: TCP port (``PORT``); 8080 is the container port every Service targets.
        name: Model name in URLs (``MLSHIFT_MODEL_NAME``); ``None`` takes the bundle's name or
            ``"model"``.
        version: Version label (``MLSHIFT_MODEL_VERSION``); ``None`` takes the bundle's.
        max_batch_size: Most rows coalesced into one ``predict`` call (``MLSHIFT_MAX_BATCH_SIZE``).
            256: a forest's call on 256 rows costs about 1.5x its call on one, so 32-row
            requests still share calls (8 to a call; at 64 only 2 did, see the benchmark).
        max_batch_wait_ms: How long a batch waits for more requests once the model is idle
            (``MLSHIFT_MAX_BATCH_WAIT_MS``). 0 means greedy batching: whatever queued while the
            model was busy goes into the next call, so a lone request is never delayed.
        max_body_bytes: Largest request body accepted (``MLSHIFT_MAX_BODY_BYTES``), 8 MiB; larger
            bodies get 413 before being read in full.
        grace_period_s: After SIGTERM, how long in-flight requests may take before the process
            exits anyway (``MLSHIFT_GRACE_PERIOD_S``); below Kubernetes' 30 s default.
        trust_pickle: Load a cloudpickle bundle (``--trust-pickle``, ``MLSHIFT_TRUST_PICKLE=1``);
            off, because unpickling runs whatever code the file holds.
        trust_types: skops types trusted beyond the known estimator libraries
            (``--trust-types a.B,c.D``, ``MLSHIFT_TRUST_TYPES``).
        signing_key: HMAC key bundles must be signed with (``MLSHIFT_SIGNING_KEY``, or the file
            ``--signing-key-file`` / ``MLSHIFT_SIGNING_KEY_FILE``); ``None``: not checked. Never
            a flag of its own, so it does not show in the process list.
        workers: Worker processes, each with the model and a batcher of its own (``WORKERS``);
            ``None`` is ``auto``: the CPUs the process may use (cgroup quota, else affinity),
            capped so every worker's copy of the model fits in memory. 1 is a single process.
        balance: How connections reach workers (``MLSHIFT_WORKER_BALANCE``): ``reuseport``
            (each worker listens on the port with SO_REUSEPORT, the kernel spreads connections)
            or ``handoff`` (the parent accepts and passes each connection on, round robin; the
            default: it spreads a few long-lived connections, as a sidecar keeps, evenly, and
            had the lower p99 in both quiet runs of benchmarks/serving.py).
    """

    model_dir: str
    host: str = "0.0.0.0"
    port: int = 8080
    name: str | None = None
    version: str | None = None
    max_batch_size: int = 256
    max_batch_wait_ms: float = 0.0
    max_body_bytes: int = 8 * 1024 * 1024
    grace_period_s: float = 25.0
    trust_pickle: bool = False
    trust_types: tuple[str, ...] = ()
    signing_key: bytes | None = field(default=None, repr=False)
    workers: int | None = None
    balance: str = "handoff"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {self.max_batch_size}")
        if self.max_batch_wait_ms < 0:
            raise ValueError(f"max batch wait must not be negative, got {self.max_batch_wait_ms}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max body bytes must be positive, got {self.max_body_bytes}")
        if self.grace_period_s < 0:
            raise ValueError(f"grace period must not be negative, got {self.grace_period_s}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1 or auto, got {self.workers}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model_server", description="Serve an mlshift model bundle over HTTP."
    )
    p.add_argument("--model-dir", default=env.get("MLSHIFT_MODEL_DIR"), help="bundle directory")
    p.add_argument("--host", default=env.get("HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env.get("PORT", "8080")))
    p.add_argument("--name", default=env.get("MLSHIFT_MODEL_NAME") or None)
    p.add_argument("--version", default=env.get("MLSHIFT_MODEL_VERSION") or None)
    p.add_argument(
        "--max-batch-size", type=int, default=int(env.get("MLSHIFT_MAX_BATCH_SIZE", "256"))
    )
    p.add_argument(
        "--max-batch-wait-ms", type=float, default=float(env.get("MLSHIFT_MAX_BATCH_WAIT_MS", "0"))
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=int(env.get("MLSHIFT_MAX_BODY_BYTES", str(8 << 20)))
    )
    p.add_argument(
        "--grace-period-s", type=float, default=float(env.get("MLSHIFT_GRACE_PERIOD_S", "25"))
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        default=env.get("MLSHIFT_TRUST_PICKLE", "").lower() in ("1", "true", "yes"),
        help="load a cloudpickle bundle (unpickling runs the code it holds)",
    )
    p.add_argument(
        "--trust-types",
        action="append",
        default=[env["MLSHIFT_TRUST_TYPES"]] if env.get("MLSHIFT_TRUST_TYPES") else [],
        help="skops types to trust beyond scikit-learn, XGBoost, LightGBM, numpy, scipy"
        " (module.Type, comma-separated or repeated)",
    )
    p.add_argument(
        "--signing-key-file",
        default=env.get("MLSHIFT_SIGNING_KEY_FILE") or None,
        help="serve only bundles signed with the HMAC key in this file",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=env.get("WORKERS", "auto"),
        help="worker processes, or auto: the CPUs this process may use (default auto)",
    )
    p.add_argument(
        "--balance",
        choices=BALANCES,
        default=env.get("MLSHIFT_WORKER_BALANCE", "handoff"),
        help="how connections reach workers (default handoff: the parent deals them out)",
    )
    return p


def _trust_types(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(t.strip() for value in values for t in value.split(",") if t.strip())


def _workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"workers must be a number or auto, got {text!r}"
        ) from None


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build ``Settings`` from command-line flags, falling back to environment variables.

    Raises:
        SystemExit: With a usage message when a flag or variable is missing or malformed.

    Example:
        >>> parse_settings(["--model-dir", "b", "--port", "9000"], env={}).port
        9000
    """
    environ = os.environ if env is None else env
    try:
        parser = _parser(environ)
    except ValueError as exc:
        raise SystemExit(
            f"model_server: a numeric environment variable is malformed: {exc}"
        ) from exc
    args = parser.parse_args(argv)
    if not args.model_dir:
        parser.error("no bundle given: pass --model-dir DIR or set MLSHIFT_MODEL_DIR")
    key_env = {k: v for k, v in environ.items() if k == "MLSHIFT_SIGNING_KEY"}
    if args.signing_key_file and not key_env:
        key_env["MLSHIFT_SIGNING_KEY_FILE"] = args.signing_key_file
    try:
        key = signing_key(key_env)
    except BundleReadError as exc:
        parser.error(str(exc))
    try:
        return Settings(
            model_dir=args.model_dir,
            host=args.host,
            port=args.port,
            name=args.name,
            version=args.version,
            max_batch_size=args.max_batch_size,
            max_batch_wait_ms=args.max_batch_wait_ms,
            max_body_bytes=args.max_body_bytes,
            grace_period_s=args.grace_period_s,
            trust_pickle=args.trust_pickle,
            trust_types=_trust_types(args.trust_types),
            signing_key=key,
            workers=args.workers,
            balance=args.balance,
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
