"""`up` reuses running servers and `down` leaves no process behind, on a second, isolated stack
(data servers and control plane; the binaries and jars come from the shared cache)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.stack import process
from tests.support.isolated_stack import PORT_VARIABLES, IsolatedStack, isolated_stack

SERVERS = {
    "postgres": "postgres",
    "mariadb": "mariadbd",
    "redis": "redis-server",
    "kafka": "kafka.Kafka",
    "etcd": "bin/etcd",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
}


@pytest.fixture
def stack() -> Iterator[IsolatedStack]:
    with isolated_stack("deltaforge-test-stack-") as private:
        yield private


def _running_pids(status_output: str) -> dict[str, int]:
    return {
        name: int(pid) for name, pid in re.findall(r"^([\w-]+)\s+running\s+pid (\d+)", status_output, re.M)
    }


def test_up_is_idempotent_and_down_stops_every_server(stack: IsolatedStack) -> None:
    first = stack.run("up")
    assert first.returncode == 0, first.stderr
    status = stack.run("status")
    assert status.returncode == 0, status.stdout
    pids = _running_pids(status.stdout)
    assert set(pids) == set(SERVERS)
    assert _processes_mentioning(str(stack.directory)), "servers name their directory"

    second = stack.run("up")
    assert second.returncode == 0, second.stderr
    for name, pid in pids.items():
        assert f"{name}: already running (pid {pid}), reusing it" in second.stderr

    down = stack.run("down")
    assert down.returncode == 0, down.stderr
    still_alive = [name for name, pid in pids.items() if process.pid_alive(pid, SERVERS[name])]
    assert still_alive == []
    listening = [var for var in PORT_VARIABLES if process.port_open("127.0.0.1", stack.port(var))]
    assert listening == []
    assert stack.run("status").returncode == 3
    assert _processes_mentioning(str(stack.directory)) == []


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
