"""`modeldeploy run`: the operator process.

Runs Kopf programmatically (kopf.run) with the handlers of `modeldeploy.controller.handlers`, so the
console script, the container image and the tests start exactly the same operator.

Kopf is imported only inside `main`, after the credentials are known: when they need no `kubernetes`
package (`without_kubernetes_package`), the process never imports it (docs/operator-at-scale.md, "imports").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import zlib
from collections.abc import Sequence
from typing import Any

from modeldeploy.controller import credentials

PROG = "modeldeploy run"
METRICS_PORT_ENV = "MODELDEPLOY_METRICS_PORT"  # the chart sets it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run the ModelDeploy operator (Kopf) against the current kubeconfig or in-cluster config.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve ModelDeployments in this namespace (repeatable; globs like 'team-*' work); default: all",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace (the default)")
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="Kopf peering object for leader election between replicas (needs the KopfPeering CRDs)",
    )
    peering.add_argument("--standalone", action="store_true", help="no peering: this replica always works")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (the highest one works); default with --peering: derived from $POD_NAME",
    )
    p.add_argument(
        "--liveness", metavar="URL", default=None, help="Kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    p.add_argument(
        "--watch-silence",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="after this long without any watch event, the liveness probe checks the watch against the "
        "apiserver (fails when it missed changes); default 300",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get(METRICS_PORT_ENV) or 9090),
        metavar="N",
        help=f"Prometheus /metrics port (0 turns it off; default ${METRICS_PORT_ENV} or 9090)",
    )
    p.add_argument("--config", metavar="FILE", default=None, help="operator config (default: $MODELDEPLOY_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--debug", action="store_true", help="log everything, including Kopf's internals")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def default_priority(pod_name: str | None) -> int | None:
    """A stable priority per replica when peering without --priority.

    Kopf pauses every replica when two share the top priority, so replicas of one Deployment (same
    flags) must differ: the pod name's CRC32 spreads them over 1..10000 and stays the same across
    restarts of that pod. Outside a pod (no POD_NAME) Kopf's own default applies.
    """
    if not pod_name:
        return None
    return zlib.crc32(pod_name.encode()) % 10000 + 1


def without_kubernetes_package() -> None:
    """Make `import kubernetes` fail in this process from now on.

    Why: Kopf imports `kubernetes.client` when it is installed, at import time (to recognise its model
    classes, which we never pass it) and logs in through it; the package is a dependency of ours for the
    CLI and the local cluster, and costs the operator process about a fifth of its idle memory. A None in
    `sys.modules` is Python's documented way to mark a module unavailable (the import system raises
    ModuleNotFoundError), so Kopf takes its own path for a missing client. Done only when our credentials
    need nothing of the package (credentials.py), before Kopf is imported, and never when something has
    imported the package already.
    """
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]


def prepare(args: argparse.Namespace) -> Any:
    """Everything before `kopf.run`: the credentials (without the `kubernetes` package when they need
    none of it), Kopf and our handlers imported, logging, and the memo the handlers start from.

    Raises CredentialsError (one sentence) when there are no usable credentials.
    """
    try:
        creds: credentials.Credentials | None = credentials.load()
    except credentials.NeedsClient:
        creds = None  # loaded by the kubernetes package below, once logging is set up (it says why)
    if creds is not None:
        without_kubernetes_package()

    if args.peering and args.priority is None:
        args.priority = default_priority(os.environ.get("POD_NAME"))
    import kopf

    import modeldeploy.controller.cache_handlers  # noqa: F401 - the model cache's handlers
    import modeldeploy.controller.child_handlers  # noqa: F401 - the autoscaling/routing children's handlers
    import modeldeploy.controller.handlers  # noqa: F401 - registers the handlers with Kopf

    kopf.configure(verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    logger = logging.getLogger(__name__)
    if creds is None:
        creds = credentials.load_any(log=logger.warning)
    else:
        logger.info("credentials: %s (without the kubernetes package)", creds.origin)
    return kopf.Memo(
        credentials=creds,  # Kopf's login and our client: the same credentials (login.py)
        options={
            "config": args.config,
            "metrics_port": args.metrics_port,
            "peering_name": args.peering,
            "priority": args.priority,
            "watch_silence_s": args.watch_silence,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the operator until it is stopped (SIGINT/SIGTERM)."""
    args = parser().parse_args(list(argv) if argv is not None else None)
    from modeldeploy.config import load_config
    from modeldeploy.engines import registry

    try:
        load_config(args.config, registry.image_keys())  # fail now, with the file's message, not inside Kopf's start-up
    except Exception as exc:  # noqa: BLE001 - a bad config file is a user error, reported in one line
        print(f"{PROG}: --config {args.config}: {exc}", file=sys.stderr)
        return 2

    try:
        memo = prepare(args)
    except credentials.CredentialsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    import kopf

    from modeldeploy.controller import tuning

    namespaces = args.namespace
    tuning.tune_gc()  # after every import: what start-up loaded is never walked again (tuning.py)
    tuning.acyclic_bodies()  # each event's object freed when handled, not by the collector (tuning.py)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True if args.standalone else None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
