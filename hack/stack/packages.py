"""What the stack needs on the machine, and installing it from Debian's packages when it is missing.

Installation runs as root (or through passwordless sudo); `DELTAFORGE_STACK_INSTALL=0` turns it
off, and then a missing piece is an error that names the package to install.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hack.stack.errors import StackError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
JAVA_MAJOR = 17


@dataclass(frozen=True)
class Requirement:
    """A command the stack runs, the Debian package that provides it, and what it is needed for."""

    command: str
    package: str
    purpose: str

    def path(self) -> str | None:
        if os.path.isabs(self.command):
            return self.command if os.access(self.command, os.X_OK) else None
        return shutil.which(self.command)

    def present(self) -> bool:
        return self.path() is not None


def java_command() -> str | None:
    """The `java` the Kafka broker runs with: `$JAVA_HOME/bin/java` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    try:
        completed = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', completed.stderr + completed.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _install_allowed() -> bool:
    return os.environ.get("DELTAFORGE_STACK_INSTALL", "1") not in {"0", "false", "no"}


def _privileged_prefix() -> list[str] | None:
    if os.geteuid() == 0:
        return []
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return ["sudo", "-n"]
    return None


def _missing_message(missing: Iterable[Requirement], reason: str) -> str:
    lines = [f"{r.purpose}: apt-get install {r.package}" for r in missing]
    return "\n".join([*lines, f"({reason})"])


def apt_install(packages: list[str]) -> None:
    """Install Debian packages without starting their system services (we run our own instances)."""
    prefix = _privileged_prefix()
    if prefix is None:
        raise StackError(f"installing {' '.join(packages)} needs root or passwordless sudo")
    print(
        f"stack: installing Debian packages: {' '.join(packages)} (first run only)",
        file=sys.stderr,
        flush=True,
    )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = False
    if os.geteuid() == 0 and not policy.exists():
        # Debian starts a server's system instance on install; ours run on private ports instead.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        added_policy = True
    try:
        for command in (
            [*prefix, "apt-get", "update", "-qq"],
            [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                output = (completed.stdout + completed.stderr).strip().splitlines()[-15:]
                raise StackError(f"`{' '.join(command)}` failed:\n" + "\n".join(output))
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)


def ensure(requirements: Iterable[Requirement]) -> None:
    """Make every requirement present, installing the missing packages when allowed."""
    missing = [r for r in requirements if not r.present()]
    if not missing:
        return
    if not _install_allowed():
        raise StackError(
            _missing_message(missing, "automatic installation is off: DELTAFORGE_STACK_INSTALL=0")
        )
    if _privileged_prefix() is None:
        raise StackError(
            _missing_message(missing, "run as root or with passwordless sudo to install automatically")
        )
    apt_install(sorted({r.package for r in missing}))
    still_missing = [r for r in missing if not r.present()]
    if still_missing:
        raise StackError(
            _missing_message(still_missing, "the packages installed but the commands are still missing")
        )


JAVA_REQUIREMENT = Requirement(
    "java", "openjdk-17-jre-headless", f"Java {JAVA_MAJOR} is required to run the local Kafka broker"
)


def ensure_java() -> str:
    """Return a Java 17+ command for the Kafka broker, installing OpenJDK 17 when allowed."""
    requirement = JAVA_REQUIREMENT
    java = java_command()
    if java is None:
        if os.environ.get("JAVA_HOME"):
            raise StackError(
                f"{requirement.purpose}: JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java; unset it or fix it"
            )
        ensure([requirement])
        java = java_command()
        assert java is not None  # ensure() raised otherwise
    major = java_major_version(java)
    if major is None or major < JAVA_MAJOR:
        found = f"Java {major}" if major else "an unreadable Java version"
        raise StackError(
            f"{requirement.purpose} ({java} is {found}): apt-get install {requirement.package} "
            "and put it first on PATH or in JAVA_HOME"
        )
    return java


def ensure_python_venv() -> None:
    """Debian splits `venv`'s pip bootstrap into python3-venv; the Makefile needs it for .venv."""
    if importlib.util.find_spec("ensurepip") is None:
        ensure([Requirement("/nonexistent/ensurepip", "python3-venv", "Python's venv module creates .venv")])
