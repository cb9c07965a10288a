"""The ``mlshift`` command line: the notebook verbs for a terminal or a CI job.

mlshift status churn
mlshift shift churn v1=90 v2=10
mlshift promote churn v2 --target kubernetes --namespace ml
mlshift rbac ml > role.yaml
mlshift demo
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlshift._exceptions import MlshiftError

__all__ = ["main"]


def _target(args: argparse.Namespace) -> Any:
    if args.target == "kubernetes":
        from mlshift.kube import Kubernetes

        return Kubernetes(namespace=args.namespace, context=args.context)
    from mlshift.local import Local

    return Local()


def _weights(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        version, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise MlshiftError(f"{pair!r} is not VERSION=WEIGHT, e.g. v1=90")
        out[version.strip()] = int(value)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlshift", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the quickstart on the local target")
    rbac = sub.add_parser("rbac", help="print the minimal Role the SDK needs")
    rbac.add_argument("namespace")
    for name, helptext in [
        ("status", "show versions, weights and readiness"),
        ("shift", "set traffic weights: mlshift shift churn v1=90 v2=10"),
        ("promote", "send all traffic to one version"),
        ("rollback", "return to the previous traffic split"),
        ("render", "print the Kubernetes and Istio objects as YAML"),
        ("delete", "remove the endpoint and stop every version"),
    ]:
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("endpoint")
        if name == "shift":
            cmd.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
        if name == "promote":
            cmd.add_argument("version")
        cmd.add_argument("--target", choices=["local", "kubernetes"], default="local")
        cmd.add_argument("--namespace", default=None)
        cmd.add_argument("--context", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a clear mlshift error)."""
    args = _parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            from mlshift.demo import main as demo

            return demo([])
        if args.command == "rbac":
            from mlshift._render import to_yaml
            from mlshift.kube import rbac

            out.write(to_yaml(rbac(args.namespace)))
            return 0
        from mlshift._endpoint import Endpoint

        ep = Endpoint(args.endpoint, _target(args))
        if args.command == "shift":
            ep.shift(_weights(args.weights))
        elif args.command == "promote":
            ep.promote(args.version)
        elif args.command == "rollback":
            ep.rollback()
        elif args.command == "delete":
            ep.delete()
            out.write(f"deleted {args.endpoint}\n")
            return 0
        elif args.command == "render":
            out.write(ep.render())
            return 0
        out.write(ep.status().to_string() + "\n")
        return 0
    except MlshiftError as exc:
        sys.stderr.write(f"mlshift: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
