"""A second local stack of its own (directory and ports), for tests that stop and start servers.

Other tests use the shared stack at the same time, so a fault test never stops a shared server:
it starts its own copy of the services it breaks (same binaries and jars, from the shared cache),
under /var/tmp because the postgres and mysql service users must traverse the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql
from psycopg import sql

from hack.stack import config
from hack.stack.config import HOST
from hack.stack.process import free_ports
from tests.fixtures.data_stack import MysqlDatabase, PgDatabase

REPO = Path(__file__).resolve().parents[2]
PORT_VARIABLES = (
    "DELTAFORGE_PG_PORT",
    "DELTAFORGE_MYSQL_PORT",
    "DELTAFORGE_REDIS_PORT",
    "DELTAFORGE_KAFKA_PORT",
    "DELTAFORGE_KAFKA_CONTROLLER_PORT",
    "DELTAFORGE_KAFKA_PROXIED_PORT",
    "DELTAFORGE_KAFKA_PROXY_PORT",
    "DELTAFORGE_ETCD_PORT",
    "DELTAFORGE_ETCD_PEER_PORT",
    "DELTAFORGE_APISERVER_PORT",
    "DELTAFORGE_CONTROLLER_MANAGER_PORT",
)


@dataclass(frozen=True)
class IsolatedStack:
    """`python -m hack.stack` pointed at a private directory and private ports."""

    directory: Path
    env: dict[str, str]

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.port('DELTAFORGE_KAFKA_PORT')}"

    def log(self, service: str) -> str:
        """The server log of `service`, for failure messages."""
        try:
            return (self.directory / service / f"{service}.log").read_text(errors="replace")
        except OSError as error:
            return f"(no {service} log: {error})"

    def postgres_database(self, name: str) -> PgDatabase:
        """A new database `name` on this stack's PostgreSQL (after `up("postgres")`), with the
        stack's admin and CDC roles, as the shared stack's `pg_database` fixture gives one."""
        port = self.port("DELTAFORGE_PG_PORT")

        def dsn(database: str, user: str, password: str) -> str:
            return f"postgresql://{user}:{password}@{HOST}:{port}/{database}"

        with psycopg.connect(
            dsn("postgres", config.PG_ADMIN_USER, config.PG_ADMIN_PASSWORD), autocommit=True
        ) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return PgDatabase(
            name=name,
            admin_dsn=dsn(name, config.PG_ADMIN_USER, config.PG_ADMIN_PASSWORD),
            cdc_dsn=dsn(name, config.PG_CDC_USER, config.PG_CDC_PASSWORD),
        )

    def mariadb_database(self, name: str) -> MysqlDatabase:
        """A new schema `name` on this stack's MariaDB (after `up("mariadb")`)."""
        database = MysqlDatabase(
            name=name,
            host=HOST,
            port=self.port("DELTAFORGE_MYSQL_PORT"),
            admin_user=config.MYSQL_ADMIN_USER,
            admin_password=config.MYSQL_ADMIN_PASSWORD,
            cdc_user=config.MYSQL_CDC_USER,
            cdc_password=config.MYSQL_CDC_PASSWORD,
        )
        with (
            pymysql.connect(
                host=HOST, port=database.port, user=database.admin_user, password=database.admin_password
            ) as admin,
            admin.cursor() as cursor,
        ):
            cursor.execute(f"CREATE DATABASE `{name}`")
        return database

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hack.stack", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, *services: str, timeout: float = 240) -> None:
        done = self.run("up", *services, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"could not start {' '.join(services)} in the isolated stack {self.directory} "
                f"(exit {done.returncode}):\n{done.stderr[-3000:]}"
            )

    def down(self, *services: str, timeout: float = 120) -> None:
        done = self.run("down", *services, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"could not stop {' '.join(services)} in the isolated stack {self.directory} "
                f"(exit {done.returncode}):\n{done.stderr[-3000:]}"
            )


@contextmanager
def isolated_stack(prefix: str = "deltaforge-faults-") -> Iterator[IsolatedStack]:
    """A private stack; on exit every server of it is stopped and its directory removed."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    directory.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFORGE_STACK")}
    env["DELTAFORGE_STACK_DIR"] = str(directory)
    env.update(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
    stack = IsolatedStack(directory, env)
    try:
        yield stack
    finally:
        try:
            stack.run("down", timeout=120)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
