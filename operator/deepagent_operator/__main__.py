"""``deepagent-operator`` command line (also ``python -m deepagent_operator``).

    deepagent-operator run [--namespace NS ...] [--standalone | --peering NAME] ...
    deepagent-operator crd [-o FILE]

Every flag defaults to an environment variable (the Helm chart sets those):

=================================  =======================================  ==============
flag                               env                                      default
=================================  =======================================  ==============
--namespace (repeatable)           DEEPAGENT_WATCH_NAMESPACES (comma list)  all namespaces
--default-image                    DEEPAGENT_DEFAULT_IMAGE                  none
--redis-image                      DEEPAGENT_REDIS_IMAGE                    redis:7.4-alpine
--default-temporal-address         DEEPAGENT_DEFAULT_TEMPORAL_ADDRESS       none
--resync-seconds                   DEEPAGENT_RESYNC_SECONDS                 60
--metrics-port                     DEEPAGENT_METRICS_PORT                   0 (off)
--liveness                         DEEPAGENT_LIVENESS                       off
=================================  =======================================  ==============

High availability: run one replica with ``--standalone`` (the default here). For several
replicas use kopf peering: install the KopfPeering CRDs (Helm: ``peering.enabled=true``)
and pass ``--peering NAME``; only the highest-priority replica handles events, the others
stand by.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import LIVENESS_ENV, WATCH_NAMESPACES_ENV


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepagent-operator", description="DeepAgent operator")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the operator (default)")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: all namespaces",
    )
    run.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help=f"watch all namespaces even if {WATCH_NAMESPACES_ENV} is set",
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--standalone",
        action="store_true",
        default=None,
        help="no peering (single replica); the default",
    )
    mode.add_argument("--peering", metavar="NAME", help="kopf peering object name (HA)")
    run.add_argument("--priority", type=int, default=None, help="peering priority")
    run.add_argument(
        "--liveness",
        default=os.environ.get(LIVENESS_ENV) or None,
        metavar="URL",
        help="e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument("--default-image", default=None)
    run.add_argument("--redis-image", default=None)
    run.add_argument("--default-temporal-address", default=None)
    run.add_argument("--resync-seconds", type=float, default=None)
    run.add_argument("--metrics-port", type=int, default=None)
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.add_argument("-q", "--quiet", action="store_true")
    crd = sub.add_parser("crd", help="print the DeepAgent CRD generated from the model")
    crd.add_argument("-o", "--output")
    crd.add_argument("--check", nargs="+", metavar="FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "run")
    args = _parser().parse_args(argv)
    if args.command == "crd":
        from .crd import main as crd_main

        extra = (["-o", args.output] if args.output else []) + (
            ["--check", *args.check] if args.check else []
        )
        return crd_main(extra)

    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)
    from .config import OperatorConfig

    config = OperatorConfig.from_env()
    namespaces = tuple(args.namespace) if args.namespace else config.namespaces
    if args.all_namespaces:
        namespaces = ()
    config = config.with_overrides(
        namespaces=namespaces,
        default_image=args.default_image,
        redis_image=args.redis_image,
        default_temporal_address=args.default_temporal_address,
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port,
    )
    kopf.configure(verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    logging.getLogger("deepagent_operator").setLevel(logging.DEBUG if args.debug else logging.INFO)
    standalone = args.peering is None
    kopf.run(
        standalone=standalone,
        peering_name=args.peering,
        priority=args.priority,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
