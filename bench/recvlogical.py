"""The physical ceiling: `pg_recvlogical` reading the slot to the end LSN and discarding the output.

It asks for the same pgoutput stream as the worker (protocol 1, the same publication), writes
it to /dev/null and exits at `-E <end lsn>`: its time is what the server's decoding plus a
C client that does nothing with the data costs. Its CPU time comes from wait4's rusage (exact,
since it is our child); its peak RSS is VmHWM sampled from /proc while it runs (wait4's
ru_maxrss would count this Python process too: posix_spawn's child shares our memory until it
execs). The walsender's CPU is sampled from /proc as well.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

from bench.measurement import Measurement
from bench.procstat import ProcWatch
from bench.workload import PgWorkload, SlotReader, confirmed_lsn, lsn_reached

NAME = "pg_recvlogical"
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)


def find_binary() -> str:
    configured = os.environ.get("PG_RECVLOGICAL")
    if configured:
        return configured
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / "pg_recvlogical"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("pg_recvlogical")
    if found is None:
        raise FileNotFoundError(
            "pg_recvlogical not found: install postgresql-client-15 or set PG_RECVLOGICAL to its path"
        )
    return found


def command(workload: PgWorkload, slot: str, binary: str) -> list[str]:
    target = workload.target
    return [
        binary, "--start", "--no-loop",
        "-h", target.host, "-p", str(target.port), "-U", target.admin_user, "-d", workload.database,
        "-S", slot,
        "-o", "proto_version=1", "-o", f"publication_names={workload.publication}",
        "-f", "/dev/null",
        "-F", "0",  # no fsync of /dev/null; progress is still reported to the server
        "-E", workload.end_lsn,
    ]  # fmt: skip


def run(workload: PgWorkload, *, log_path: Path, timeout: float) -> Measurement:
    slot = workload.slots[NAME]
    binary = find_binary()
    argv = command(workload, slot, binary)
    env = {**os.environ, "PGPASSWORD": workload.target.admin_password}
    reader = SlotReader(workload.target, slot)
    server = ProcWatch(reader, close=reader.close).start()
    with open(log_path, "wb") as log:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ]
        started = time.perf_counter()
        pid = os.posix_spawn(binary, argv, env, file_actions=actions)
    client = ProcWatch(lambda: pid, interval=0.02).start()
    timer = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    client.stop()
    server.stop()
    code = os.waitstatus_to_exitcode(status)
    output = log_path.read_text(errors="replace").strip()
    if code != 0:
        raise RuntimeError(f"pg_recvlogical exited with {code} after {seconds:.1f} s: {output[-2000:]}")
    reached = confirmed_lsn(workload.target, slot)
    if reached is None or not lsn_reached(workload.target, reached, workload.end_lsn):
        raise RuntimeError(f"pg_recvlogical stopped at {reached}, before the end LSN {workload.end_lsn}")
    return Measurement(
        contender=NAME,
        events=workload.rows,  # it reached the end LSN, so it read every change of the workload
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=client.peak_rss or 0.0,
        server_cpu_seconds=server.cpu,
        details={
            "waitingForCpuSeconds": None if client.run_delay is None else round(client.run_delay, 3),
            "command": " ".join(argv),
            "confirmedLsn": reached,
        },
    )
