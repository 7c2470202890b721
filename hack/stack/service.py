"""The shape every local server follows, so `up`, `down` and `status` treat them alike."""

from __future__ import annotations

import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path

from hack.stack import packages, process
from hack.stack.config import HOST, Settings
from hack.stack.errors import StackError


class Service(ABC):
    """One server of the stack: installed from packages, run from its own directory, tracked by PID."""

    name: str
    command_marker: str  # a word of the server's command line, checked against PID reuse
    depends_on: tuple[str, ...] = ()  # services that must be ready before this one launches
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 30
    start_timeout: float = 60

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.service_dir(self.name)

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    @abstractmethod
    def requirements(self) -> list[packages.Requirement]: ...

    @abstractmethod
    def pid(self) -> int | None: ...

    @abstractmethod
    def launch(self) -> None:
        """Prepare the data directory if needed and start the server without waiting for it."""

    @abstractmethod
    def accepting(self) -> bool:
        """True when the server answers its own protocol (an open port alone is not enough)."""

    def configure(self) -> None:  # noqa: B027 - optional hook; most servers need no set-up
        """Idempotent set-up after the server is ready (users, grants)."""

    @abstractmethod
    def environment(self) -> dict[str, str]: ...

    def prepare(self) -> None:
        """Install or download what the server needs; run before `launch`."""
        packages.ensure(self.requirements())

    def running(self) -> bool:
        return process.pid_alive(self.pid(), self.command_marker)

    def check_port_free(self) -> None:
        if process.port_open(HOST, self.port):
            raise StackError(
                f"{self.name}: port {HOST}:{self.port} is taken by a process that is not this stack's "
                f"(no live PID in {self.home}); stop it, or choose another port with the "
                f"DELTAFORGE_*_PORT variables (docs/local-stack.md)"
            )

    def wait_ready(self) -> None:
        process.wait_until(
            self.accepting,
            timeout=self.start_timeout,
            still_starting=self.still_starting,
            what=self.name,
            log_path=self.log_path,
        )

    def still_starting(self) -> bool:
        return self.running()

    def stop(self) -> bool:
        """Stop the server if it runs; return whether it was running."""
        pid = self.pid()
        if not process.pid_alive(pid, self.command_marker):
            return False
        assert pid is not None
        process.stop_pid(pid, self.command_marker, sig=self.stop_signal, timeout=self.stop_timeout)
        return True

    def describe(self) -> str:
        pid = self.pid()
        if self.running():
            return f"{self.name:<24} running  pid {pid:<8} {HOST}:{self.port}"
        return f"{self.name:<24} stopped"


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f} s"
