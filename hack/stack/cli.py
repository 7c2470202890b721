"""Command line of the local stack. User errors print one message and exit 1, never a traceback."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from hack.stack import orchestrate, packages
from hack.stack.errors import StackError


def _install(names: Sequence[str]) -> int:
    packages.ensure_python_venv()
    orchestrate.prepare(orchestrate.services(names))
    print("stack: prerequisites present", file=sys.stderr)
    return 0


def _up(names: Sequence[str]) -> int:
    orchestrate.up(names)
    return 0


def _down(names: Sequence[str]) -> int:
    orchestrate.down(names)
    return 0


def _clean(_names: Sequence[str]) -> int:
    orchestrate.clean()
    return 0


def _status(names: Sequence[str]) -> int:
    lines, all_running = orchestrate.status(names)
    print("\n".join(lines))
    return 0 if all_running else 3


def _env(names: Sequence[str]) -> int:
    for key, value in orchestrate.environment(names).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


COMMANDS = {
    "up": (_up, "start the services (all by default); running ones are reused"),
    "down": (_down, "stop the services; their data stays for the next `up`"),
    "status": (_status, "show which services run (exit 3 if any is stopped)"),
    "env": (_env, 'print connection settings as shell exports: eval "$(python -m hack.stack env)"'),
    "install": (_install, "install missing packages and download jars, without starting anything"),
    "clean": (_clean, "stop everything and delete the stack's data directory"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.stack",
        description="The local real stack for DeltaForge tests and the demo (loopback only).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_handler, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name != "clean":
            command.add_argument(
                "services",
                nargs="*",
                metavar="SERVICE",
                help=f"any of: {', '.join(orchestrate.SERVICE_NAMES)}; or a group: "
                + ", ".join(
                    f"{group} ({' '.join(members)})" for group, members in orchestrate.GROUPS.items()
                ),
            )
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        return handler(getattr(args, "services", []))
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
