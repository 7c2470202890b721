"""Connecting to PostgreSQL: connection settings, and psycopg errors turned into clear messages."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo

from deltaforge.sources.errors import SourceConfigError, SourceUnavailable

# Output settings the decoder relies on, applied to every session we open.
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    database: str
    user: str
    password: str | None
    sslmode: str = "prefer"
    connect_timeout: float = 10.0
    application_name: str = "deltaforge"

    def kwargs(self, *, replication: bool = False) -> dict[str, str | int | None]:
        params: dict[str, str | int | None] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": max(int(self.connect_timeout), 1),
            "application_name": self.application_name,
            "options": SESSION_OPTIONS,
        }
        if self.password is not None:
            params["password"] = self.password
        if replication:
            params["replication"] = "database"
        return params

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database} as {self.user}"


def translate(error: psycopg.Error, settings: PostgresSettings) -> Exception:
    """A psycopg error as SourceConfigError (fix the spec or the server) or SourceUnavailable (retry)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    lowered = text.lower()
    if "password authentication failed" in lowered or isinstance(error, pg_errors.InvalidPassword):
        return SourceConfigError(
            f"PostgreSQL rejected the password of user '{settings.user}' at {settings.host}:{settings.port}: "
            "check spec.source.postgres.password (and the Secret it refers to)"
        )
    if "does not exist" in lowered and "database" in lowered:
        return SourceConfigError(
            f"database '{settings.database}' does not exist on {settings.host}:{settings.port}: check spec.source.postgres.database"
        )
    if "role" in lowered and "does not exist" in lowered:
        return SourceConfigError(
            f"role '{settings.user}' does not exist on {settings.host}:{settings.port}: check spec.source.postgres.user"
        )
    if "no pg_hba.conf entry" in lowered:
        return SourceConfigError(
            f"PostgreSQL at {settings.host}:{settings.port} refuses {settings.user}: add a pg_hba.conf entry for it ({text})"
        )
    if isinstance(error, pg_errors.InsufficientPrivilege):
        return SourceConfigError(f"permission denied for '{settings.user}': {text}")
    return SourceUnavailable(f"PostgreSQL at {settings.where}: {text}")


async def connect(
    settings: PostgresSettings, *, replication: bool = False
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    conninfo = make_conninfo("", **settings.kwargs(replication=replication))
    try:
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.Error as error:
        raise translate(error, settings) from error
