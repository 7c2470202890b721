"""What the MySQL/MariaDB source is told: connection settings, tables, server id, heartbeats.

The default replica `server_id` is derived from the Pipeline's namespace and name, so it is
stable across restarts (MySQL refuses two readers with one id, and MariaDB disconnects the older
one) and unique per pipeline without anyone choosing numbers.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from typing import Any, Final

from deltaforge.sources.patterns import TablePatterns

# Derived ids fall in [1_000_000, 4_294_967_295]: replicas in the wild usually get small numbers
# (1, 2, 100, 1001...), so a derived id never collides with them. 4_294_967_295 = 2**32 - 1 is
# the largest server_id MySQL and MariaDB accept.
SERVER_ID_MIN: Final = 1_000_000
SERVER_ID_MAX: Final = 4_294_967_295

# Schemas of the server itself: never captured, whatever the patterns say.
SYSTEM_SCHEMAS: Final = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

# How often the server sends a heartbeat when `heartbeat.interval` is 0: we always want one, since
# it is what tells a quiet stream from a dead connection.
LIVENESS_HEARTBEAT: Final = 30.0


def derive_server_id(namespace: str, name: str) -> int:
    """A deterministic replica server_id for the pipeline `namespace/name`, in [SERVER_ID_MIN, SERVER_ID_MAX]."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return SERVER_ID_MIN + int.from_bytes(digest[:8], "big") % (SERVER_ID_MAX - SERVER_ID_MIN + 1)


@dataclass(frozen=True)
class MysqlSettings:
    """How to connect: every connection we open (control and binlog) uses these."""

    host: str
    port: int
    user: str
    password: str | None
    ssl_mode: str = "prefer"  # disable | prefer | require | verify-ca | verify-full
    connect_timeout: float = 10.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} as {self.user}"

    def connect_kwargs(self, *, read_timeout: float | None = None) -> dict[str, Any]:
        """PyMySQL connection arguments: UTC session, utf8mb4, the TLS mode, bounded waits."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password or "",
            "charset": "utf8mb4",
            "connect_timeout": max(self.connect_timeout, 1.0),
            "read_timeout": read_timeout,
            "write_timeout": max(self.connect_timeout, 10.0),
            "init_command": "SET time_zone = '+00:00'",
            "autocommit": True,
            "program_name": "deltaforge",
        }
        kwargs.update(_tls_kwargs(self.ssl_mode))
        return kwargs


def _tls_kwargs(mode: str) -> dict[str, Any]:
    if mode == "disable":
        return {"ssl_disabled": True}
    if mode == "prefer":
        return {}  # PyMySQL's default: TLS when the server offers it, plain otherwise
    context = ssl.create_default_context()
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
    elif mode != "verify-full":
        raise ValueError(f"unknown sslMode {mode!r}: use disable, prefer, require, verify-ca or verify-full")
    return {"ssl": context}


@dataclass(frozen=True)
class MysqlSourceConfig:
    settings: MysqlSettings
    patterns: TablePatterns
    server_id: int
    heartbeat_interval: float  # 0: no position heartbeats; the server still sends liveness ones
    pipeline: str  # namespace/name, the stream's identity in event ids

    @property
    def source_id(self) -> str:
        """The identity of the change stream in event ids: the pipeline, not the host (a failover
        to another server keeps the GTIDs and so the ids)."""
        return f"mysql:{self.pipeline}"

    @property
    def server_heartbeat(self) -> float:
        """Seconds between the server's heartbeats on an idle binlog connection."""
        return self.heartbeat_interval if self.heartbeat_interval > 0 else LIVENESS_HEARTBEAT

    @property
    def read_timeout(self) -> float:
        """A read that waits this long saw no event and no heartbeat: the connection is dead."""
        return max(3 * self.server_heartbeat, 5.0)

    def literal_schemas(self) -> list[str] | None:
        """The databases the patterns name without globs, for filtering inside the binlog reader;
        None when a pattern's database part is a glob."""
        schemas = []
        for pattern in self.patterns.patterns:
            schema = pattern.partition(".")[0]
            if "*" in schema:
                return None
            schemas.append(schema)
        return sorted(set(schemas) - SYSTEM_SCHEMAS)
