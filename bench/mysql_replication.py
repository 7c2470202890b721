"""The decode-only ceiling: mysql-replication reading the change set and discarding every row.

    python -m bench.mysql_replication --port P --database D --start POSITION --end-gtid G --rows N

The child (`main`) is one BinLogStreamReader with the source's own options
(`deltaforge.sources.mysql.reader.stream_options`: the same event types, schema filter,
heartbeats and GTID start), so the server sends it the same stream it sends the worker. It
iterates every row of every rows event (`event.rows` is what decodes them) and does nothing with
them: no conversion, no envelope, no sink. It stops after the commit (XID) of the workload's last
transaction and checks that it saw every row. The library's decoding in pure Python is the
ceiling a worker built on it can reach.

The parent (`run`) measures it as pg_recvlogical is measured (`procstat.run_to_exit`): from
spawn to exit, interpreter start-up and imports included, CPU from wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import MariadbGtidEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from bench import checkout_environment
from bench.measurement import Measurement
from bench.mysql_workload import MysqlTarget, MysqlWorkload
from bench.procstat import CpuSpan, run_to_exit
from deltaforge.sources.mysql.position import BinlogPosition
from deltaforge.sources.mysql.reader import stream_options

NAME = "mysql-replication"
SERVER_NAME = "mariadbd"  # the server process; its binlog dump thread serves the stream


def command(workload: MysqlWorkload) -> list[str]:
    target = workload.target
    return [
        sys.executable, "-m", "bench.mysql_replication",
        "--host", target.host, "--port", str(target.port), "--database", workload.database,
        "--start", workload.start.format(), "--end-gtid", workload.end_gtid, "--rows", str(workload.rows),
    ]  # fmt: skip


def run(workload: MysqlWorkload, *, server_pid: int | None, log_path: Path, timeout: float) -> Measurement:
    argv = command(workload)
    env = checkout_environment(dict(os.environ))
    server = CpuSpan(server_pid).start()
    exited = run_to_exit(argv, env=env, log_path=log_path, timeout=timeout)
    server_cpu = server.sample()
    output = log_path.read_text(errors="replace").strip()
    if exited.code != 0:
        raise RuntimeError(f"{NAME} exited with {exited.code} after {exited.seconds:.1f} s: {output[-2000:]}")
    seen = json.loads(output.splitlines()[-1])
    return Measurement(
        contender=NAME,
        events=int(seen["rows"]),
        seconds=exited.seconds,
        cpu_seconds=exited.cpu_seconds,
        peak_rss_mib=exited.peak_rss_mib,
        server_cpu_seconds=server_cpu,
        server_name=SERVER_NAME,
        details={
            "waitingForCpuSeconds": None if exited.run_delay is None else round(exited.run_delay, 3),
            "rowsEvents": seen["rowsEvents"],
            "command": " ".join(argv),
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mysql_replication", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default=MysqlTarget.host)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True, help="the workload's database: the schema filter")
    parser.add_argument("--start", required=True, help="the start position, as a checkpoint stores it")
    parser.add_argument("--end-gtid", required=True, help="the GTID of the workload's last transaction")
    parser.add_argument("--rows", type=int, required=True, help="rows the change set holds")
    args = parser.parse_args(argv)
    config = MysqlTarget(port=args.port, host=args.host).source_config(args.database, reader=NAME)
    start = BinlogPosition.parse(args.start).before()
    stream = BinLogStreamReader(**stream_options(config, start, mariadb=True))
    rows = rows_events = 0
    last = False
    try:
        while True:
            event = stream.fetchone()
            if event is None:
                print(f"the server ended the binlog stream after {rows} rows", file=sys.stderr)
                return 1
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                rows_events += 1
                for _row in event.rows:
                    rows += 1
            elif isinstance(event, MariadbGtidEvent):
                last = event.gtid == args.end_gtid
            elif isinstance(event, XidEvent) and last:
                break
    finally:
        stream.close()
    print(json.dumps({"rows": rows, "rowsEvents": rows_events}))
    if rows != args.rows:
        print(f"read {rows} rows up to GTID {args.end_gtid}, expected {args.rows}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
