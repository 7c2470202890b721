"""Starting, finding and stopping the stack's server processes by PID, and waiting for them.

Servers are started detached (their own session, stdin from /dev/null, output to a log file),
so they outlive the command that started them and never hold a caller's pipes open.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hack.stack.config import HOST
from hack.stack.errors import StackError


def spawn_detached(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running server whose output goes to `log_path`; return its PID."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    return process.pid


def run(argv: Sequence[str], *, what: str, input_text: str | None = None, timeout: float = 600) -> str:
    """Run a short command to completion; on failure raise a StackError carrying its output."""
    try:
        completed = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as error:
        raise StackError(f"{what}: {argv[0]} is not installed") from error
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{what}: `{' '.join(argv)}` did not finish within {timeout:.0f} s") from error
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()
        raise StackError(f"{what} failed (exit {completed.returncode}):\n{_last_lines(output, 25)}")
    return completed.stdout


def as_user(user: str, argv: Sequence[str]) -> list[str]:
    """Run as `user` when we are root (PostgreSQL refuses to run as root); as ourselves otherwise."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    return list(argv)


def chown_to(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=user, group=user)


def read_pid(pid_file: Path) -> int | None:
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(first_line) if first_line.isdigit() else None


def pid_alive(pid: int | None, command_marker: str) -> bool:
    """True when `pid` runs and its command line names `command_marker` (guards against PID reuse)."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if command_marker.encode() not in cmdline:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int, command_marker: str, *, sig: signal.Signals, timeout: float) -> None:
    """Signal `pid` and wait for it to exit, escalating to SIGKILL after `timeout` seconds."""
    if not pid_alive(pid, command_marker):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, command_marker):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid, command_marker) and time.monotonic() < deadline:
        time.sleep(0.1)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_ports(count: int = 1) -> list[int]:
    """Ports nobody listens on right now (held together, so they differ), for private servers."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    still_starting: Callable[[], bool],
    what: str,
    log_path: Path,
) -> None:
    """Poll `ready` until it holds; fail early if the process died, with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not still_starting() and not _recheck(still_starting):
            raise StackError(
                f"{what} exited during start-up. Last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.2)
    raise StackError(
        f"{what} was not ready within {timeout:.0f} s. Last lines of {log_path}:\n{log_tail(log_path)}"
    )


def _recheck(still_starting: Callable[[], bool]) -> bool:
    """A second look before declaring a server dead: under load, /proc can briefly disagree."""
    time.sleep(0.5)
    return still_starting()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return _last_lines(text, lines)


def _last_lines(text: str, lines: int) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])
