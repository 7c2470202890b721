"""The `deltaforge` command line.

User errors (a bad manifest, a missing Secret, a misconfigured database) exit non-zero with a
message that names the problem; they never print a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from deltaforge import __version__

if TYPE_CHECKING:
    from deltaforge_operator.process import OperatorOptions


def _print_version(_args: argparse.Namespace) -> int:
    print(f"deltaforge {__version__} (Python {platform.python_version()})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from deltaforge.spec import validate_manifest_file

    failed = False
    for path in args.manifests:
        problems = validate_manifest_file(path)
        if problems:
            failed = True
            print("\n".join(problems), file=sys.stderr)
        else:
            print(f"{path}: valid")
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    from deltaforge import gc_tuning

    gc_tuning.pause_for_start_up()
    from deltaforge.assembly import Secrets
    from deltaforge.observability.logging import configure_logging
    from deltaforge.spec import SpecError, load_manifest_file
    from deltaforge.worker import run_pipeline

    try:
        configure_logging(args.log, args.log_format)
    except ValueError as error:
        print(f"deltaforge: {error}", file=sys.stderr)
        return 2
    try:
        pipeline = load_manifest_file(args.manifest)
        secrets = Secrets(secrets_dir=args.secrets_dir)
        return asyncio.run(
            run_pipeline(pipeline, http_host=args.http_host, http_port=args.http_port, secrets=secrets)
        )
    except SpecError as error:
        print(f"deltaforge: {args.manifest} is not a valid Pipeline:\n{error}", file=sys.stderr)
        return 1
    except NotImplementedError as error:
        print(f"deltaforge: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def operator_options(args: argparse.Namespace) -> OperatorOptions:
    """The operator's settings from its parsed command line (flags already fell back to $VARIABLES)."""
    from deltaforge_operator.cleanup import DEFAULT_TIMEOUT_SECONDS
    from deltaforge_operator.process import OperatorOptions
    from deltaforge_operator.reconciler import ReconcilerSettings
    from deltaforge_operator.render import DEFAULT_IMAGE, WorkerSettings

    return OperatorOptions(
        reconciler=ReconcilerSettings(
            worker=WorkerSettings(
                image=args.worker_image or DEFAULT_IMAGE,
                image_pull_policy=args.worker_image_pull_policy,
                http_host=args.worker_http_host,
            ),
            namespaces=tuple(args.namespace or ()),
            resync_seconds=args.resync_interval,
            cleanup_timeout_seconds=args.cleanup_timeout or DEFAULT_TIMEOUT_SECONDS,
        ),
        http_host=args.http_host,
        http_port=args.http_port,
        watch_timeout=args.watch_timeout,
        stale_after=args.liveness_stale_after,
    )


def _operator(args: argparse.Namespace) -> int:
    from deltaforge.observability.logging import configure_logging
    from deltaforge_operator.process import run_operator

    try:
        # kopf logs every watch event and handler run at info; its warnings are what matters.
        configure_logging(
            args.log or os.environ.get("DELTAFORGE_LOG") or "info,kopf=warning", args.log_format
        )
    except ValueError as error:
        print(f"deltaforge: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_operator(operator_options(args)))
    except KeyboardInterrupt:
        return 130
    return 0


def _seconds(text: str) -> float:
    """A positive number of seconds. argparse also applies this to a default taken from the
    environment, so a bad $VARIABLE is refused with a usage error, not a traceback."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_operator_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator that turns Pipelines into worker Deployments",
        description="Run the DeltaForge operator (kopf) until SIGTERM.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NS",
        help="watch only this namespace (repeat for several; default: all namespaces)",
    )  # fmt: skip
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    operator.add_argument(
        "--http-host", default="0.0.0.0", help="address of /healthz and /metrics (default 0.0.0.0)"
    )
    operator.add_argument(
        "--http-port", "--liveness-port", type=int, default=8080,
        help="port of /healthz (liveness) and /metrics (default 8080)",
    )  # fmt: skip
    operator.add_argument(
        "--resync-interval", type=float, default=60.0, metavar="SECONDS",
        help="every Pipeline gets a full reconciliation this often (default 60)",
    )  # fmt: skip
    operator.add_argument(
        "--watch-timeout", type=float, default=300.0, metavar="SECONDS",
        help="watches are re-established after this long, so a dead connection is noticed (default 300)",
    )  # fmt: skip
    operator.add_argument(
        "--liveness-stale-after", type=float, default=None, metavar="SECONDS",
        help="/healthz fails when nothing was reconciled for this long (default: 3 resyncs + 60 s)",
    )  # fmt: skip
    operator.add_argument(
        "--worker-image", default=os.environ.get("DELTAFORGE_WORKER_IMAGE"),
        help="image of the worker pods (default $DELTAFORGE_WORKER_IMAGE or ghcr.io/deltaforge/deltaforge:<version>)",
    )  # fmt: skip
    operator.add_argument(
        "--worker-image-pull-policy", choices=("IfNotPresent", "Always", "Never"), default="IfNotPresent",
        help="imagePullPolicy of the worker pods (default IfNotPresent)",
    )  # fmt: skip
    operator.add_argument(
        "--worker-http-host", default=os.environ.get("DELTAFORGE_WORKER_HTTP_HOST") or "0.0.0.0",
        metavar="HOST",
        help="address the workers serve /metrics, /readyz and /healthz on; $(POD_IP) where pods share "
        "a host network (default $DELTAFORGE_WORKER_HTTP_HOST or 0.0.0.0)",
    )  # fmt: skip
    operator.add_argument(
        "--cleanup-timeout", type=_seconds, default=os.environ.get("DELTAFORGE_CLEANUP_TIMEOUT"),
        metavar="SECONDS",
        help="how long deleting a Pipeline may take to drop its slot before the operator gives up "
        "(default $DELTAFORGE_CLEANUP_TIMEOUT or 300)",
    )  # fmt: skip
    operator.add_argument(
        "--log",
        default=None,
        help="levels, e.g. info,kopf=debug (default $DELTAFORGE_LOG or info,kopf=warning)",
    )
    operator.add_argument(
        "--log-format", choices=("json", "console"), default="json", help="log line format (default json)"
    )
    operator.set_defaults(handler=_operator)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltaforge",
        description=(
            "Kubernetes-native change data capture: streams committed row changes from "
            "PostgreSQL and MySQL/MariaDB into Kafka, Redis and other sinks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"deltaforge {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a Pipeline manifest until SIGTERM", description="Run a Pipeline."
    )
    run.add_argument("manifest", help="the Pipeline manifest (YAML or JSON)")
    run.add_argument(
        "--http-host",
        default=os.environ.get("DELTAFORGE_HTTP_HOST", "0.0.0.0"),
        help="address of /metrics, /healthz, /readyz, /status (default $DELTAFORGE_HTTP_HOST or 0.0.0.0)",
    )
    run.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("DELTAFORGE_HTTP_PORT", "9000")),
        help="port of the HTTP endpoints (default $DELTAFORGE_HTTP_PORT or 9000; 0 picks a free one)",
    )
    run.add_argument(
        "--log", default=None, help="levels, e.g. info,deltaforge.sinks.kafka=debug (default $DELTAFORGE_LOG)"
    )
    run.add_argument(
        "--log-format", choices=("json", "console"), default="json", help="log line format (default json)"
    )
    run.add_argument(
        "--secrets-dir", default=None, help="where Secrets are mounted (default $DELTAFORGE_SECRETS_DIR)"
    )
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate", help="check Pipeline manifests and list every problem", description="Validate Pipelines."
    )
    validate.add_argument("manifests", nargs="+", help="Pipeline manifests (YAML or JSON)")
    validate.set_defaults(handler=_validate)

    _add_operator_parser(commands)

    version = commands.add_parser("version", help="print the DeltaForge and Python versions")
    version.set_defaults(handler=_print_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
