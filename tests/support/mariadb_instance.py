"""A throwaway MariaDB server of a test's own, for server settings the shared one must keep.

The shared stack's MariaDB serves every other test with a row-based binlog; a test that needs a
bad server setting (binlog off, STATEMENT format, purged binlogs) starts one of these instead. It
lives in a fresh directory under /var/tmp (the mysql user must traverse it), runs as the mysql
user when we are root, listens on 127.0.0.1 and a free port, and is stopped and deleted on exit
from `throwaway_mariadb` even when the test fails. `restart` changes settings that only a restart
applies (log_bin).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest

from hack.stack import process
from hack.stack.config import HOST
from tests.support.worker import free_port

SERVICE_USER = "mysql"
SERVER = "/usr/sbin/mariadbd"
START_TIMEOUT = 60.0
CDC_GRANTS = "SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR"

_BASE = {
    "server_id": "1",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "default_time_zone": "'+00:00'",
    "character-set-server": "utf8mb4",
    "innodb_buffer_pool_size": "16M",
    "innodb_log_file_size": "8M",
    "innodb_flush_log_at_trx_commit": "2",
    "sync_binlog": "0",
    "performance_schema": "OFF",
}


@dataclass
class MariaDbInstance:
    """A running throwaway server: TCP as `user`/`password` (the CDC grants), root by its socket."""

    home: Path
    port: int
    user: str = "cdc"
    password: str = "cdc"
    pid: int | None = field(default=None)

    @property
    def socket(self) -> Path:
        return self.home / "mariadbd.sock"

    @property
    def log_path(self) -> Path:
        return self.home / "mariadbd.log"

    def root(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"

    def write_config(self, settings: Mapping[str, str]) -> Path:
        options = {**_BASE, **settings}
        lines = [
            "[mysqld]",
            f"user = {SERVICE_USER if os.geteuid() == 0 else os.environ.get('USER', '')}",
            f"datadir = {self.home / 'data'}",
            f"socket = {self.socket}",
            f"pid-file = {self.home / 'mariadbd.pid'}",
            f"log-error = {self.log_path}",
            f"port = {self.port}",
            f"bind-address = {HOST}",
            "skip-name-resolve",
            *(f"{name} = {value}" for name, value in options.items() if value != ""),
            *(name for name, value in options.items() if value == ""),
        ]
        path = self.home / "my.cnf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)
        return path

    def start(self, settings: Mapping[str, str]) -> None:
        config = self.write_config(settings)
        self.pid = process.spawn_detached([SERVER, f"--defaults-file={config}"], self.home / "console.log")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.root().close()
                return
            except pymysql.err.OperationalError:
                if not process.pid_alive(self.pid, "mariadbd"):
                    break
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"the throwaway MariaDB did not start:\n{self.log()[-3000:]}", pytrace=False)

    def stop(self) -> None:
        if self.pid is not None:
            process.stop_pid(self.pid, "mariadbd", sig=signal.SIGTERM, timeout=30)
            self.pid = None

    def restart(self, settings: Mapping[str, str]) -> None:
        self.stop()
        self.start(settings)


def _install(home: Path, instance: MariaDbInstance) -> None:
    config = instance.write_config({})
    try:
        completed = subprocess.run(
            [
                "mariadb-install-db", f"--defaults-file={config}", "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.fail("mariadb-install-db is not installed (Debian package mariadb-server)", pytrace=False)
    if completed.returncode != 0:
        pytest.fail(f"mariadb-install-db failed:\n{completed.stdout}{completed.stderr}", pytrace=False)


@contextlib.contextmanager
def throwaway_mariadb(settings: Mapping[str, str]) -> Iterator[MariaDbInstance]:
    """Start a MariaDB with `settings` (my.cnf options; "" for a bare flag such as log_bin) and a
    CDC user holding the documented grants; stop and delete it afterwards."""
    home = Path(tempfile.mkdtemp(prefix="deltaforge-mariadb-", dir="/var/tmp"))
    instance = MariaDbInstance(home=home, port=free_port())
    try:
        home.chmod(0o755)
        (home / "data").mkdir()
        for path in (home, home / "data"):
            process.chown_to(path, SERVICE_USER)
        _install(home, instance)
        instance.start(settings)
        with instance.root() as root, root.cursor() as cursor:
            cursor.execute(f"CREATE USER '{instance.user}'@'%' IDENTIFIED BY '{instance.password}'")
            cursor.execute(f"GRANT {CDC_GRANTS} ON *.* TO '{instance.user}'@'%'")
            cursor.execute("CREATE DATABASE shop")
            cursor.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, qty int)")
        yield instance
    finally:
        try:
            instance.stop()
        finally:
            shutil.rmtree(home, ignore_errors=True)
