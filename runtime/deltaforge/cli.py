"""The `deltaforge` command line.

Each subcommand is registered in `_build_parser`; user errors exit with a message and a
non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from deltaforge import __version__


def _print_version(_args: argparse.Namespace) -> int:
    print(f"deltaforge {__version__} (Python {platform.python_version()})")
    return 0


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
