"""MariaDB 10.11 from Debian's packages, with a row-based binlog and a CDC user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hack.stack import config, process
from hack.stack.config import HOST, Settings
from hack.stack.packages import Requirement
from hack.stack.service import Service

SERVICE_USER = "mysql"

# Rewritten at every start, so a change here applies to an existing data directory.
_MY_CNF = """\
[mysqld]
user = {user}
datadir = {data_dir}
socket = {socket}
pid-file = {pid_file}
log-error = {log}
port = {port}
bind-address = {host}
skip-name-resolve
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
default_time_zone = '+00:00'
character-set-server = utf8mb4
max_connections = 300
innodb_buffer_pool_size = 128M
# test-only speedups: a crash of this throwaway server may lose its last transactions
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0

[client]
socket = {socket}
"""

# CDC grants as documented for the binlog source; MariaDB 10.5+ calls REPLICATION CLIENT
# "BINLOG MONITOR" and accepts both names.
_USERS_SQL = """\
CREATE USER IF NOT EXISTS '{cdc_user}'@'%' IDENTIFIED BY '{cdc_password}';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR
  ON *.* TO '{cdc_user}'@'%';
CREATE USER IF NOT EXISTS '{admin_user}'@'%' IDENTIFIED BY '{admin_password}';
GRANT ALL PRIVILEGES ON *.* TO '{admin_user}'@'%' WITH GRANT OPTION;
"""

BIN_SERVER = "/usr/sbin/mariadbd"


class MariaDB(Service):
    name = "mariadb"
    command_marker = "mariadbd"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._launched_pid: int | None = None

    @property
    def port(self) -> int:
        return self.settings.mariadb_port

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def defaults_file(self) -> Path:
        return self.home / "my.cnf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "mariadbd.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / "mariadbd.sock"

    def requirements(self) -> list[Requirement]:
        return [
            Requirement(BIN_SERVER, "mariadb-server", "MariaDB 10.11 runs the local binlog source"),
            Requirement("mariadb-install-db", "mariadb-server", "MariaDB 10.11 runs the local binlog source"),
            Requirement("mariadb", "mariadb-client", "the mariadb client sets up the local MariaDB users"),
        ]

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file)

    def launch(self) -> None:
        for directory in (self.home, self.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
            process.chown_to(directory, SERVICE_USER)
        self.defaults_file.write_text(
            _MY_CNF.format(
                user=SERVICE_USER if os.geteuid() == 0 else os.environ.get("USER", ""),
                data_dir=self.data_dir,
                socket=self.socket,
                pid_file=self.pid_file,
                log=self.log_path,
                port=self.port,
                host=HOST,
            )
        )
        self.defaults_file.chmod(0o644)
        if not (self.data_dir / "mysql").is_dir():
            process.run(
                [
                    "mariadb-install-db",
                    f"--defaults-file={self.defaults_file}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                what="initializing the MariaDB data directory",
            )
        self.pid_file.unlink(missing_ok=True)
        self._launched_pid = process.spawn_detached(
            [BIN_SERVER, f"--defaults-file={self.defaults_file}"], self.home / "console.log"
        )

    def still_starting(self) -> bool:
        # mariadbd writes its PID file only once it is up; until then watch the launched process.
        return self.running() or process.pid_alive(self._launched_pid, self.command_marker)

    def accepting(self) -> bool:
        completed = subprocess.run(
            [
                "mariadb-admin",
                f"--defaults-file={self.defaults_file}",
                "-uroot",
                "--connect-timeout=2",
                "ping",
            ],
            capture_output=True,
            check=False,
        )
        return completed.returncode == 0 and self.pid() is not None

    def sql(self, statements: str) -> str:
        return process.run(
            ["mariadb", f"--defaults-file={self.defaults_file}", "-uroot", "--batch"],
            what="running SQL on the local MariaDB",
            input_text=statements,
        )

    def configure(self) -> None:
        self.sql(
            _USERS_SQL.format(
                cdc_user=config.MYSQL_CDC_USER,
                cdc_password=config.MYSQL_CDC_PASSWORD,
                admin_user=config.MYSQL_ADMIN_USER,
                admin_password=config.MYSQL_ADMIN_PASSWORD,
            )
        )

    def environment(self) -> dict[str, str]:
        return {
            "DELTAFORGE_MYSQL_HOST": HOST,
            "DELTAFORGE_MYSQL_PORT": str(self.port),
            "DELTAFORGE_MYSQL_ADMIN_USER": config.MYSQL_ADMIN_USER,
            "DELTAFORGE_MYSQL_ADMIN_PASSWORD": config.MYSQL_ADMIN_PASSWORD,
            "DELTAFORGE_MYSQL_CDC_USER": config.MYSQL_CDC_USER,
            "DELTAFORGE_MYSQL_CDC_PASSWORD": config.MYSQL_CDC_PASSWORD,
        }
