"""The physical ceiling: `pg_recvlogical` reading the slot to the end LSN and discarding the output.

It asks for the same pgoutput stream as the worker (protocol 1, the same publication), writes
it to /dev/null and exits at `-E <end lsn>`: its time is what the server's decoding plus a
C client that does nothing with the data costs; it is measured by `procstat.run_to_exit`. The
walsender's CPU is sampled from /proc as well.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.measurement import Measurement
from bench.procstat import run_to_exit
from bench.workload import PgWorkload, confirmed_lsn, lsn_reached, walsender

NAME = "pg_recvlogical"
SERVER_NAME = "walsender"  # the server process that decodes for a slot's reader
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
    argv = command(workload, slot, find_binary())
    env = {**os.environ, "PGPASSWORD": workload.target.admin_password}
    server = walsender(workload.target, slot).start()
    exited = run_to_exit(argv, env=env, log_path=log_path, timeout=timeout)
    server.stop()
    output = log_path.read_text(errors="replace").strip()
    if exited.code != 0:
        raise RuntimeError(
            f"pg_recvlogical exited with {exited.code} after {exited.seconds:.1f} s: {output[-2000:]}"
        )
    reached = confirmed_lsn(workload.target, slot)
    if reached is None or not lsn_reached(workload.target, reached, workload.end_lsn):
        raise RuntimeError(f"pg_recvlogical stopped at {reached}, before the end LSN {workload.end_lsn}")
    return Measurement(
        contender=NAME,
        events=workload.rows,  # it reached the end LSN, so it read every change of the workload
        seconds=exited.seconds,
        cpu_seconds=exited.cpu_seconds,
        peak_rss_mib=exited.peak_rss_mib,
        server_cpu_seconds=server.cpu,
        server_name=SERVER_NAME,
        details={
            "waitingForCpuSeconds": None if exited.run_delay is None else round(exited.run_delay, 3),
            "command": " ".join(argv),
            "confirmedLsn": reached,
        },
    )
