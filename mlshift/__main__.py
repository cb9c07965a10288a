"""The ``mlshift`` command line: the notebook verbs for a terminal or a CI job.

mlshift deploy churn v2 model.skops --sample X_test.csv
mlshift list
mlshift status churn
mlshift shift churn v2=10            (v2 gets 10 %, the rest pro rata)
mlshift shift churn v1=90 v2=10
mlshift metrics churn --since 5m
mlshift promote churn v2 --target kubernetes --namespace ml
mlshift canary churn v2 --steps 5,25,50,100 --interval 1m   (exit 0 promoted, 1 rolled back)
mlshift remove churn v1
mlshift revive churn
mlshift rbac ml > role.yaml
mlshift demo

Errors print ``mlshift: <message>`` to stderr and exit 2 (argparse's usage errors exit 2 too).
The local target keeps its state in ``$MLSHIFT_HOME`` (default ``~/.mlshift``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift._exceptions import InvalidArgumentError, MlshiftError, UnsupportedError

if TYPE_CHECKING:
    from mlshift._endpoint import Endpoint

__all__ = ["main"]

log = logging.getLogger("mlshift.cli")

MODEL_HELP = """\
a bundle directory written by mlshift.bundle(), or a saved model file: .skops (skops.io.dump),
.joblib (joblib.dump) or .pkl/.pickle (pickle or cloudpickle). Loading a pickle or joblib file
runs code stored in it: name only files you trust. mlshift loads nothing but the file you name;
a .skops file is loaded trusting the types it lists."""
SAMPLE_HELP = "a few input rows (.csv, .parquet or .npy; the first 5 are used) for the schema"
_ENDPOINT_COMMANDS = {
    "deploy": "deploy a saved model or a bundle as a new version (the first takes all traffic)",
    "status": "show versions, weights and readiness",
    "shift": "set traffic weights: shift churn v1=90 v2=10, or shift churn v2=10 (rest pro rata)",
    "promote": "send all traffic to one version",
    "rollback": "return to the previous traffic split",
    "remove": "stop and remove a version that carries no traffic",
    "revive": "restart versions whose process died (local target), e.g. after a reboot",
    "canary": "step a version's weight up while its gates pass; exit 0 promoted, 1 otherwise",
    "metrics": "per-version requests, errors and latency over a recent window",
    "render": "print the Kubernetes and Istio objects as YAML",
    "delete": "remove the endpoint and stop every version",
}


# ---------------------------------------------------------------- arguments


def _target(args: argparse.Namespace) -> Any:
    if args.target == "kubernetes":
        from mlshift.kube import Kubernetes

        return Kubernetes(namespace=args.namespace, context=args.context)
    from mlshift.local import Local

    return Local()


def _weights(pairs: list[str]) -> dict[str, int]:
    """``["v1=90", "v2=10"]`` -> ``{"v1": 90, "v2": 10}``."""
    out: dict[str, int] = {}
    for pair in pairs:
        version, sep, value = pair.partition("=")
        if not sep or not version.strip() or not value.strip().isdigit():
            raise MlshiftError(f"{pair!r} is not VERSION=WEIGHT, e.g. v1=90")
        if version.strip() in out:
            raise MlshiftError(f"version {version.strip()!r} is given twice")
        out[version.strip()] = int(value)
    return out


def _add_target_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--target", choices=["local", "kubernetes"], default="local")
    cmd.add_argument("--namespace", default=None, help="Kubernetes namespace")
    cmd.add_argument("--context", default=None, help="kubeconfig context")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlshift",
        description=__doc__.split("\n")[0],
        epilog="The local target keeps its state in $MLSHIFT_HOME (default ~/.mlshift).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the quickstart on the local target (about a minute)")
    rbac = sub.add_parser("rbac", help="print the minimal Role the SDK needs")
    rbac.add_argument("namespace")
    rbac.add_argument(
        "--routing",
        choices=("auto", "istio", "gateway-api"),
        default="auto",
        help="grant only what this routing uses (default: auto, both)",
    )
    for flag, what in (
        ("--replicas", "PodDisruptionBudgets (versions with more than one pod)"),
        ("--autoscale", "HorizontalPodAutoscalers (versions deployed with autoscale=)"),
        ("--pod-monitor", "PodMonitors (Kubernetes(pod_monitor=True))"),
    ):
        rbac.add_argument(flag, action="store_true", help=f"also grant {what}")
    listing = sub.add_parser("list", help="print the endpoints on the local target, one a line")
    _add_target_options(listing)
    for name, helptext in _ENDPOINT_COMMANDS.items():
        cmd = sub.add_parser(name, help=helptext, description=helptext)
        cmd.add_argument("endpoint")
        if name == "deploy":
            cmd.add_argument("version")
            cmd.add_argument("model", metavar="MODEL", help=MODEL_HELP)
            cmd.add_argument("--sample", metavar="FILE", default=None, help=SAMPLE_HELP)
            cmd.add_argument("--replicas", type=int, default=1)
            cmd.add_argument(
                "--trust-pickle",
                action="store_true",
                help="the model is a class of your own, stored with cloudpickle (which runs"
                " its code when loaded): say you trust it",
            )
            cmd.add_argument(
                "--autoscale",
                metavar="MIN,MAX,CPU",
                default=None,
                help="a HorizontalPodAutoscaler: min and max pods, target CPU %% (2,8,70)",
            )
            cmd.add_argument(
                "--startup", default=None, help="how long the model may take to load (15m)"
            )
        if name == "shift":
            cmd.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
        if name in ("promote", "remove"):
            cmd.add_argument("version")
        if name == "canary":
            cmd.add_argument("version")
            cmd.add_argument("--steps", default="10,25,50,100", help="percentages (10,25,50,100)")
            cmd.add_argument("--interval", default="30s", help="time between looks (30s)")
            cmd.add_argument(
                "--tolerance",
                type=float,
                default=0.005,
                help="error rate allowed above stable's, absolute (0.005)",
            )
            cmd.add_argument(
                "--latency-tolerance",
                type=float,
                default=0.2,
                help="how much slower than stable, relative (0.2)",
            )
            cmd.add_argument(
                "--max-error-rate",
                type=float,
                default=None,
                help="also an absolute limit on the canary's 5xx share",
            )
            cmd.add_argument("--threshold", type=int, default=2, help="failing looks in a row")
            cmd.add_argument("--max-inconclusive", type=int, default=3)
            cmd.add_argument("--alpha", type=float, default=0.05)
        if name == "metrics":
            cmd.add_argument("--since", default="5m", help="window, e.g. 30s, 5m, 1h (5m)")
            cmd.add_argument("--step", default="10s", help="row interval (10s)")
        _add_target_options(cmd)
    return parser


def _autoscale(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        low, high, cpu = (int(part) for part in text.split(","))
    except ValueError as exc:
        raise InvalidArgumentError(
            f"--autoscale must be MIN,MAX,CPU (e.g. 2,8,70), got {text!r}"
        ) from exc
    return low, high, cpu


# ---------------------------------------------------------------- models and samples


def _load_model(path: Path) -> Any:
    """The model at ``path``: a bundle directory is passed on as is, a file is loaded."""
    if path.is_dir():
        return str(path)
    if not path.is_file():
        raise MlshiftError(f"no model at {str(path)!r}; name a saved model file or a bundle")
    suffix = path.suffix.lower()
    try:
        if suffix == ".skops":
            import skops.io

            trusted = skops.io.get_untrusted_types(file=path)
            log.info("loading %s trusting the types it lists: %s", path, ", ".join(trusted))
            return skops.io.load(path, trusted=trusted)
        if suffix == ".joblib":
            import joblib  # type: ignore[import-untyped,unused-ignore]

            return joblib.load(path)
        if suffix in (".pkl", ".pickle"):
            import pickle

            with open(path, "rb") as fh:
                return pickle.load(fh)  # the file the user named, as --help warns
    except ImportError as exc:
        raise MlshiftError(f"cannot load {path.name}: {exc}; install the missing package") from exc
    except Exception as exc:  # any error unpickling a user's file: say which file and why
        raise MlshiftError(f"cannot load the model in {path}: {type(exc).__name__}: {exc}") from exc
    raise MlshiftError(
        f"cannot tell how to load {path.name}: use a .skops, .joblib, .pkl or .pickle file,"
        " or a bundle directory (mlshift.bundle)"
    )


def _load_sample(path: Path) -> Any:
    """The first rows of a sample file (a DataFrame from .csv/.parquet, an array from .npy)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pandas as pd

            return pd.read_csv(path, nrows=5)
        if suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(path).head(5)
        if suffix == ".npy":
            import numpy as np

            return np.load(path, allow_pickle=False)[:5]
    except (OSError, ValueError, ImportError) as exc:
        raise MlshiftError(f"cannot read the sample {path}: {exc}") from exc
    raise MlshiftError(f"cannot read the sample {path.name}: use a .csv, .parquet or .npy file")


# ---------------------------------------------------------------- commands


def _require(ep: Endpoint) -> None:
    """Raise unless ``ep`` exists on its target (it has versions, or a stored local state)."""
    from mlshift.local import Local

    ep.status()
    if ep.versions:
        return
    target = ep.target
    where = ""
    if isinstance(target, Local):
        if ep.name in target.endpoints():
            return  # a stored state without versions (an interrupted change): let it be fixed
        where = f" in {target.home}"
    raise MlshiftError(
        f"no endpoint {ep.name!r} on the {target.name} target{where}; `mlshift list` shows"
        f" the endpoints, `mlshift deploy {ep.name} v1 MODEL` creates it"
    )


def _list(args: argparse.Namespace) -> int:
    from mlshift.local import Local

    target = _target(args)
    if not isinstance(target, Local):
        raise UnsupportedError(
            "list reads the local state directory; on Kubernetes list the endpoints with"
            " kubectl get services -l app.kubernetes.io/managed-by=mlshift"
        )
    names = target.endpoints()
    if not names:
        sys.stderr.write(f"mlshift: no endpoints in {target.home}\n")
    sys.stdout.write("".join(f"{name}\n" for name in names))
    return 0


def _status(ep: Endpoint) -> str:
    return ep.status().to_string() + "\n"


class CanaryNotPromoted(MlshiftError):
    """The CLI's canary ended without promotion (exit code 1)."""


def _canary(ep: Endpoint, args: argparse.Namespace) -> str:
    from mlshift._gates import ErrorRate, Latency, SampleRatio

    try:
        steps = tuple(int(s) for s in args.steps.split(","))
    except ValueError as exc:
        raise MlshiftError(f"--steps takes percentages like 5,25,50,100: {exc}") from exc
    run = ep.canary(
        args.version,
        steps=steps,
        interval=args.interval,
        gates=[ErrorRate(args.tolerance), Latency(args.latency_tolerance), SampleRatio()],
        max_error_rate=args.max_error_rate,
        threshold=args.threshold,
        max_inconclusive=args.max_inconclusive,
        alpha=args.alpha,
        blocking=True,
    )
    table = run.history[["time", "weight", "verdict", "reason"]].to_string(index=False)
    if not run.promoted:
        raise CanaryNotPromoted(f"{table}\ncanary {args.version}: {run.outcome}")
    return f"{table}\ncanary {args.version}: {run.outcome}\n"


def _run(ep: Endpoint, args: argparse.Namespace) -> str:
    """Run one endpoint command; return what to print."""
    command = args.command
    if command == "deploy":
        model = _load_model(Path(args.model))
        sample = _load_sample(Path(args.sample)) if args.sample else None
        ep.deploy(
            model,
            args.version,
            sample=sample,
            replicas=args.replicas,
            trust_pickle=args.trust_pickle,
            autoscale=_autoscale(args.autoscale),
            startup=args.startup,
        )
        return f"deployed {args.version} of {ep.name} at {ep.url}\n" + _status(ep)
    if command == "render":
        return str(ep.render())
    _require(ep)
    if command == "shift":
        weights = _weights(args.weights)
        if len(weights) == 1:  # shift churn v2=10: the rest pro rata, as ep.shift("v2", 10)
            [(version, percent)] = weights.items()
            ep.shift(version, percent)
        else:
            ep.shift(weights)
    elif command == "promote":
        ep.promote(args.version)
    elif command == "rollback":
        ep.rollback()
    elif command == "remove":
        ep.remove(args.version)
    elif command == "revive":
        restarted = ep.revive()
        done = f"restarted {', '.join(restarted)}" if restarted else "every version was running"
        return f"{done}\n" + _status(ep)
    elif command == "metrics":
        frame = ep.metrics(since=args.since, step=args.step)
        if frame.empty:
            return f"no traffic to {ep.name} in the last {args.since}\n"
        return str(frame.to_string(index=False)) + "\n"
    elif command == "canary":
        return _canary(ep, args)
    elif command == "delete":
        ep.delete()
        return f"deleted {ep.name}\n"
    return _status(ep)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a clear mlshift error).

    Example:
        >>> main(["status", "churn"])  # doctest: +SKIP
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from mlshift.demo import main as demo

            return demo([])
        if args.command == "rbac":
            from mlshift._render import to_yaml
            from mlshift.kube import rbac

            role = rbac(
                args.namespace,
                routing=args.routing,
                replicas=args.replicas,
                autoscale=args.autoscale,
                pod_monitor=args.pod_monitor,
            )
            sys.stdout.write(to_yaml(role))
            return 0
        if args.command == "list":
            return _list(args)
        from mlshift._endpoint import Endpoint

        sys.stdout.write(_run(Endpoint(args.endpoint, _target(args)), args))
        return 0
    except CanaryNotPromoted as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except MlshiftError as exc:
        sys.stderr.write(f"mlshift: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
