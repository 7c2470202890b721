"""CPU time and peak memory of a process, from /proc (Linux), watchers for server-side processes,
and a reference reader run from spawn to exit.

`/proc/<pid>/stat` fields 14 and 15 (utime, stime) are in clock ticks; `VmHWM` in
`/proc/<pid>/status` is the peak resident set size in KiB. Both cover the whole life of the
process up to the moment they are read.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process used so far (its own threads, not its children)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def run_delay_seconds(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (schedstat field 2).

    On a shared 2-core machine this is the time other processes took from the contender: a
    contender that waited long for a core was slowed down by its neighbours, not by itself.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of the resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/{pid}/status has no VmHWM line")


class ProcWatch:
    """Samples a process that may exit on its own (CPU seconds, VmHWM, run delay) every `interval`.

    The pid is looked up by `find_pid` (None until the process exists). The last sample taken
    before the process vanished is kept, so a figure may miss up to `interval` of CPU time; the
    peak RSS is a high-water mark and is normally reached long before the end.
    """

    def __init__(
        self,
        find_pid: Callable[[], int | None],
        *,
        interval: float = 0.05,
        find_interval: float = 0.02,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._find_pid, self._close = find_pid, close
        self._interval, self._find_interval = interval, find_interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.pid: int | None = None
        self._cpu: float | None = None
        self._rss: float | None = None
        self._delay: float | None = None
        self._thread = threading.Thread(target=self._run, name="proc-watch", daemon=True)

    def start(self) -> ProcWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and self.pid is None:
            try:
                self.pid = self._find_pid()
            except Exception:  # a failed look-up only costs an extra figure, never the run
                self.pid = None
            if self.pid is None:
                self._stop.wait(self._find_interval)
        if self._close is not None:
            self._close()
        while not self._stop.is_set() and self.sample() is not None:
            self._stop.wait(self._interval)

    def sample(self) -> float | None:
        """Read the process now and return its CPU seconds; None once it is gone."""
        pid = self.pid
        if pid is None:
            return None
        try:
            cpu, rss, delay = cpu_seconds(pid), peak_rss_mib(pid), run_delay_seconds(pid)
        except (OSError, ValueError, IndexError):
            return None
        with self._lock:
            self._cpu, self._rss, self._delay = cpu, rss, delay
        return cpu

    @property
    def cpu(self) -> float | None:
        with self._lock:
            return self._cpu

    @property
    def peak_rss(self) -> float | None:
        with self._lock:
            return self._rss

    @property
    def run_delay(self) -> float | None:
        with self._lock:
            return self._delay

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ServerWatch(Protocol):
    """The server-side CPU spent for one contender: started just before it, sampled at its goal."""

    def start(self) -> Self: ...

    def sample(self) -> float | None:
        """CPU seconds so far; None when the process is gone or was never found."""

    def stop(self) -> None: ...


class CpuSpan:
    """CPU seconds a long-lived process (a shared server) spends from `start()` on.

    For a server that serves a reader from a thread, not a process of its own (MariaDB's binlog
    dump), this is the nearest figure: it includes whatever else the server did meanwhile.
    """

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._before: float | None = None

    def start(self) -> CpuSpan:
        self._before = self._read()
        return self

    def _read(self) -> float | None:
        if self._pid is None:
            return None
        try:
            return cpu_seconds(self._pid)
        except (OSError, ValueError, IndexError):
            return None

    def sample(self) -> float | None:
        now = self._read()
        return None if now is None or self._before is None else now - self._before

    def stop(self) -> None:
        return None


@dataclass(frozen=True)
class Exited:
    """A reference reader's run: exit code, wall seconds from spawn to exit, and its resources."""

    code: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    run_delay: float | None


def run_to_exit(argv: Sequence[str], *, env: dict[str, str], log_path: Path, timeout: float) -> Exited:
    """Spawn `argv` (stdout and stderr to `log_path`), wait for it, SIGKILL it after `timeout`.

    Its CPU time comes from wait4's rusage (exact, since it is our child); its peak RSS is VmHWM
    sampled from /proc every 20 ms while it runs (wait4's ru_maxrss would count this Python
    process too: posix_spawn's child shares our memory until it execs).
    """
    with open(log_path, "wb") as log:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ]
        started = time.perf_counter()
        pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    client = ProcWatch(lambda: pid, interval=0.02).start()
    timer = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    client.stop()
    return Exited(
        code=os.waitstatus_to_exitcode(status),
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=client.peak_rss or 0.0,
        run_delay=client.run_delay,
    )
