"""A throwaway PostgreSQL 15 server of a test's own, for settings the shared server must not change.

The shared stack's server runs with `wal_level=logical` and serves every other test; a test that
needs another server-wide setting (`wal_level=replica`) starts one of these instead. It lives in a
fresh directory under /var/tmp (the postgres user cannot traverse pytest's private temp dirs), runs
as the postgres user (PostgreSQL refuses to run as root), listens on 127.0.0.1 and a free port, and
is stopped and deleted on exit from `throwaway_postgres` even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hack.stack import process
from hack.stack.config import HOST
from hack.stack.packages import PG_BIN
from tests.support.worker import free_port

SERVICE_USER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class PgInstance:
    """A running throwaway server: reach it over TCP as `user`/`password`, or as superuser by socket."""

    home: Path
    port: int
    database: str
    user: str
    password: str

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def superuser_connection(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A connection over the instance's Unix socket as the `postgres` superuser (trusted)."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SERVICE_USER, dbname=database, autocommit=True
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"


def _run(argv: Sequence[str], what: str, timeout: float) -> None:
    try:
        completed = subprocess.run(
            process.as_user(SERVICE_USER, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        pytest.fail(
            f"{what}: {argv[0]} is not installed (PostgreSQL 15 binaries expected in {PG_BIN})", pytrace=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: `{' '.join(argv)}` did not finish within {timeout:.0f} s", pytrace=False)
    if completed.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}",
            pytrace=False,
        )


def _stop(instance: PgInstance) -> None:
    """Fast shutdown through pg_ctl; SIGKILL to the postmaster if that does not work."""
    if not (instance.data_dir / "postmaster.pid").exists():
        return
    argv = [str(PG_BIN / "pg_ctl"), "-D", str(instance.data_dir), "-m", "fast", "-w", "-t", "20", "stop"]
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            process.as_user(SERVICE_USER, argv),
            capture_output=True,
            timeout=STOP_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    pid = process.read_pid(instance.data_dir / "postmaster.pid")
    if pid is not None and process.pid_alive(pid, "postgres"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process.pid_alive(pid, "postgres") and time.monotonic() < deadline:
            time.sleep(0.1)


def _initdb(home: Path) -> None:
    data_dir = home / "data"
    _run(
        [
            str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", SERVICE_USER, "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync",
        ],
        "initializing a throwaway PostgreSQL data directory",
        timeout=120,
    )  # fmt: skip
    # The socket is trusted (our own set-up); TCP needs a password, as a real server would.
    hba = data_dir / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        f"host all all {HOST}/32 scram-sha-256\n"
        f"host replication all {HOST}/32 scram-sha-256\n"
    )
    process.chown_to(hba, SERVICE_USER)


def _start(instance: PgInstance, settings: dict[str, str]) -> None:
    options = {
        "listen_addresses": HOST,
        "port": str(instance.port),
        "unix_socket_directories": str(instance.socket_dir),
        "fsync": "off",
        **settings,
    }
    server_options = " ".join(f"-c {name}={value}" for name, value in options.items())
    argv = [
        str(PG_BIN / "pg_ctl"), "-D", str(instance.data_dir), "-l", str(instance.log_path),
        "-o", server_options, "-w", "-t", str(int(START_TIMEOUT)), "start",
    ]  # fmt: skip
    try:
        _run(argv, "starting a throwaway PostgreSQL", timeout=START_TIMEOUT + 10)
    except pytest.fail.Exception as failure:
        raise pytest.fail.Exception(f"{failure.msg}\nserver log:\n{instance.log()[-3000:]}") from None


@contextlib.contextmanager
def throwaway_postgres(
    settings: dict[str, str], *, user: str, password: str, database: str
) -> Iterator[PgInstance]:
    """Start a PostgreSQL 15 server with `settings` (e.g. `{"wal_level": "replica"}`), a login role
    `user`/`password` with REPLICATION and an empty `database`; stop and delete it afterwards."""
    home = Path(tempfile.mkdtemp(prefix="deltaforge-pg-", dir="/var/tmp"))
    instance = PgInstance(home=home, port=free_port(), database=database, user=user, password=password)
    try:
        for directory in (home, instance.socket_dir):
            directory.mkdir(exist_ok=True)
            process.chown_to(directory, SERVICE_USER)
        _initdb(home)
        _start(instance, settings)
        with instance.superuser_connection() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user))
            )
        yield instance
    finally:
        try:
            _stop(instance)
        finally:
            shutil.rmtree(home, ignore_errors=True)
