"""Redis from Debian's packages, without persistence (a throwaway test server)."""

from __future__ import annotations

import socket
from pathlib import Path

from hack.stack import process
from hack.stack.config import HOST
from hack.stack.packages import Requirement
from hack.stack.service import Service


class Redis(Service):
    name = "redis"
    command_marker = "redis-server"
    stop_timeout = 15

    @property
    def port(self) -> int:
        return self.settings.redis_port

    @property
    def pid_file(self) -> Path:
        return self.home / "redis.pid"

    def requirements(self) -> list[Requirement]:
        return [Requirement("redis-server", "redis-server", "Redis runs the local stream sink")]

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file)

    def launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        process.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "yes",
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.log_path),
                "--dir", str(self.home),
            ],
            what="starting Redis",
        )  # fmt: skip

    def still_starting(self) -> bool:
        return self.running() or not self.pid_file.exists()

    def accepting(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def environment(self) -> dict[str, str]:
        return {"DELTAFORGE_REDIS_URL": self.settings.redis_url(), "DELTAFORGE_REDIS_PORT": str(self.port)}
