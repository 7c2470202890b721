"""`up` reuses running servers and `down` leaves no process behind, on a second, isolated stack
(data servers and control plane; the binaries and jars come from the shared cache)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.stack import process

REPO = Path(__file__).resolve().parents[2]
PORT_VARIABLES = (
    "DELTAFORGE_PG_PORT",
    "DELTAFORGE_MYSQL_PORT",
    "DELTAFORGE_REDIS_PORT",
    "DELTAFORGE_KAFKA_PORT",
    "DELTAFORGE_KAFKA_CONTROLLER_PORT",
    "DELTAFORGE_ETCD_PORT",
    "DELTAFORGE_ETCD_PEER_PORT",
    "DELTAFORGE_APISERVER_PORT",
    "DELTAFORGE_CONTROLLER_MANAGER_PORT",
)
SERVERS = {
    "postgres": "postgres",
    "mariadb": "mariadbd",
    "redis": "redis-server",
    "kafka": "kafka.Kafka",
    "etcd": "bin/etcd",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def isolated_stack() -> Iterator[dict[str, str]]:
    # Under /var/tmp, not pytest's private tmp: the postgres and mysql users must traverse it.
    stack_dir = Path(tempfile.mkdtemp(prefix="deltaforge-test-stack-", dir="/var/tmp"))
    stack_dir.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFORGE_STACK")}
    env["DELTAFORGE_STACK_DIR"] = str(stack_dir)
    env.update(zip(PORT_VARIABLES, map(str, _free_ports(len(PORT_VARIABLES))), strict=True))
    yield env
    _stack("down", env=env)
    shutil.rmtree(stack_dir, ignore_errors=True)


def _stack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hack.stack", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _running_pids(status_output: str) -> dict[str, int]:
    return {
        name: int(pid) for name, pid in re.findall(r"^([\w-]+)\s+running\s+pid (\d+)", status_output, re.M)
    }


def test_up_is_idempotent_and_down_stops_every_server(isolated_stack: dict[str, str]) -> None:
    first = _stack("up", env=isolated_stack)
    assert first.returncode == 0, first.stderr
    status = _stack("status", env=isolated_stack)
    assert status.returncode == 0, status.stdout
    pids = _running_pids(status.stdout)
    assert set(pids) == set(SERVERS)
    assert _processes_mentioning(isolated_stack["DELTAFORGE_STACK_DIR"]), "servers name their directory"

    second = _stack("up", env=isolated_stack)
    assert second.returncode == 0, second.stderr
    for name, pid in pids.items():
        assert f"{name}: already running (pid {pid}), reusing it" in second.stderr

    down = _stack("down", env=isolated_stack)
    assert down.returncode == 0, down.stderr
    still_alive = [name for name, pid in pids.items() if process.pid_alive(pid, SERVERS[name])]
    assert still_alive == []
    listening = [var for var in PORT_VARIABLES if process.port_open("127.0.0.1", int(isolated_stack[var]))]
    assert listening == []
    assert _stack("status", env=isolated_stack).returncode == 3
    assert _processes_mentioning(isolated_stack["DELTAFORGE_STACK_DIR"]) == []


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (the stack directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found
