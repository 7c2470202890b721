"""PostgreSQL 15 from Debian's packages, configured for logical replication."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from hack.stack import config, process
from hack.stack.config import HOST
from hack.stack.packages import PG_BIN, Requirement
from hack.stack.service import Service

SERVICE_USER = "postgres"

# Rewritten at every start, so a change here applies to an existing data directory.
_SETTINGS = """\
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{socket_dir}'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_slot_wal_keep_size = 1GB
max_connections = 200
shared_buffers = 128MB
# test-only speedups: a crash of this throwaway server may lose its data
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
"""

# Local socket connections are trusted (the stack's own set-up); TCP needs a password, so a
# wrong password fails as it would in production. Logical walsenders match the database lines.
_HBA = """\
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""


class Postgres(Service):
    name = "postgres"
    command_marker = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client to leave.
    stop_signal = signal.SIGINT

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    def requirements(self) -> list[Requirement]:
        return [
            Requirement(
                str(PG_BIN / "postgres"), "postgresql-15", "PostgreSQL 15 runs the local source database"
            ),
            Requirement(
                str(PG_BIN / "psql"), "postgresql-client-15", "psql sets up the local PostgreSQL users"
            ),
        ]

    def pid(self) -> int | None:
        return process.read_pid(self.data_dir / "postmaster.pid")

    def launch(self) -> None:
        for directory in (self.home, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            process.chown_to(directory, SERVICE_USER)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        (self.data_dir / "deltaforge.conf").write_text(
            _SETTINGS.format(host=HOST, port=self.port, socket_dir=self.socket_dir)
        )
        (self.data_dir / "pg_hba.conf").write_text(_HBA)
        for name in ("deltaforge.conf", "pg_hba.conf"):
            process.chown_to(self.data_dir / name, SERVICE_USER)
        # A postmaster killed with SIGKILL leaves its PID file; once that PID runs anything else,
        # PostgreSQL could refuse to start ("lock file already exists"). We know it is not ours.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        # pg_ctl forks the postmaster and returns; wait_ready() polls for it.
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-W", "start"]
        process.run(process.as_user(SERVICE_USER, argv), what="starting PostgreSQL")

    def _initdb(self) -> None:
        password_file = self.home / "initdb-password"
        password_file.write_text(config.PG_ADMIN_PASSWORD + "\n")
        process.chown_to(password_file, SERVICE_USER)
        try:
            argv = [
                str(PG_BIN / "initdb"),
                "-D", str(self.data_dir),
                "-U", config.PG_ADMIN_USER,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]  # fmt: skip
            process.run(
                process.as_user(SERVICE_USER, argv), what="initializing the PostgreSQL data directory"
            )
        finally:
            password_file.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'deltaforge.conf'\n")

    def still_starting(self) -> bool:
        # The postmaster writes its PID file a moment after pg_ctl returns.
        return self.running() or not (self.data_dir / "postmaster.pid").exists()

    def accepting(self) -> bool:
        completed = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return completed.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        argv = [
            str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", config.PG_ADMIN_USER, "-d", database,
        ]  # fmt: skip
        return process.run(argv, what="running SQL on the local PostgreSQL", input_text=sql)

    def configure(self) -> None:
        user, password = config.PG_CDC_USER, config.PG_CDC_PASSWORD
        self.psql(
            f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN
                CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{password}';
              END IF;
            END $$;
            """
        )

    def environment(self) -> dict[str, str]:
        return {
            "DELTAFORGE_PG_HOST": HOST,
            "DELTAFORGE_PG_PORT": str(self.port),
            "DELTAFORGE_PG_ADMIN_DSN": self.settings.postgres_dsn(),
            "DELTAFORGE_PG_CDC_USER": config.PG_CDC_USER,
            "DELTAFORGE_PG_CDC_PASSWORD": config.PG_CDC_PASSWORD,
            "DELTAFORGE_PG_BIN": str(PG_BIN),
        }
