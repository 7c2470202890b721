"""Where changes come from: PostgreSQL logical replication or the MySQL/MariaDB binlog."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from deltaforge.spec.base import NonEmptyStr, OneOfModel, Port, SpecModel, schema_pattern
from deltaforge.spec.credentials import CredentialField
from deltaforge.spec.tables import TablePattern
from deltaforge.spec.units import NonNegativeDuration, PositiveDuration

_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def _check_slot_name(value: str) -> str:
    if not _SLOT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid replication slot name; use 1 to 63 lowercase letters, digits and '_'"
        )
    return value


def _check_identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid publication name; use up to 63 letters, digits, '_' and '$', "
            "starting with a letter or '_'"
        )
    return value


SlotName = Annotated[str, AfterValidator(_check_slot_name), schema_pattern(_SLOT_NAME.pattern, max_length=63)]
PublicationName = Annotated[
    str, AfterValidator(_check_identifier), schema_pattern(_IDENTIFIER.pattern, max_length=63)
]
TablePatterns = Annotated[list[TablePattern], Field(min_length=1)]
ServerId = Annotated[int, Field(ge=1, le=4294967295)]

_TABLES = (
    "Tables to capture, as `schema.table` patterns; `*` matches any run of characters, "
    "e.g. `public.orders`, `public.order_*`, `inventory.*`."
)
_HOST = "Host name or IP address of the database server."
_PASSWORD = "Password of the replication user: a string (may use `${ENV_NAME}`) or a secretKeyRef."
_CONNECT_TIMEOUT = "How long to wait for a connection before retrying, e.g. `10s`."


class SslMode(StrEnum):
    """TLS policy for the PostgreSQL connection (libpq `sslmode`)."""

    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class MysqlSslMode(StrEnum):
    """TLS policy for the MySQL connection; `verify-full` is MySQL's VERIFY_IDENTITY."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class ReclaimPolicy(StrEnum):
    """What happens to the replication slot when the Pipeline is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class SlotSpec(SpecModel):
    """The PostgreSQL logical replication slot that holds the pipeline's position."""

    name: SlotName | None = Field(
        default=None,
        description=(
            "Replication slot name (lowercase letters, digits, '_'). Default: `df_<namespace>__<name>`, "
            "sanitized and at most 63 characters."
        ),
    )
    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.RETAIN,
        description=(
            "`Retain` keeps the slot when the Pipeline is deleted (re-creating the Pipeline resumes "
            "without loss); `Delete` drops it so it cannot retain WAL forever."
        ),
    )
    create: bool = Field(default=True, description="Create the slot if it does not exist.")


class PublicationSpec(SpecModel):
    """The PostgreSQL publication that selects which tables' changes are decoded."""

    name: PublicationName | None = Field(
        default=None,
        description="Publication name. Default: `df_<namespace>__<name>`, sanitized and at most 63 characters.",
    )
    create: bool = Field(
        default=False,
        description=(
            "Create the publication for the matching tables if it does not exist, and add newly "
            "matching tables at start (needs the CREATE privilege on the database and ownership of "
            "the tables); when false it must already exist and include every matching table."
        ),
    )


class HeartbeatSpec(SpecModel):
    """Periodic writes that let the source advance while the captured tables are idle."""

    interval: NonNegativeDuration = Field(
        default="10s",
        validate_default=True,
        description=(
            "How often to emit a heartbeat so an idle slot or binlog position still advances, "
            "e.g. `10s`; `0s` disables heartbeats."
        ),
    )


class PostgresSourceSpec(SpecModel):
    """Capture changes from PostgreSQL through logical replication (pgoutput)."""

    host: NonEmptyStr = Field(description=_HOST)
    port: Port = Field(default=5432, description="TCP port of the PostgreSQL server.")
    database: NonEmptyStr = Field(description="Database to capture changes from.")
    user: CredentialField = Field(
        description="Replication user: a string (may use `${ENV_NAME}`) or a secretKeyRef."
    )
    password: CredentialField | None = Field(default=None, description=_PASSWORD)
    ssl_mode: SslMode = Field(
        default=SslMode.PREFER,
        description="TLS mode: disable, allow, prefer, require, verify-ca or verify-full (as libpq's sslmode).",
    )
    tables: TablePatterns = Field(description=_TABLES)
    slot: SlotSpec = Field(default_factory=SlotSpec, description="The logical replication slot.")
    publication: PublicationSpec = Field(
        default_factory=PublicationSpec, description="The publication naming the captured tables."
    )
    heartbeat: HeartbeatSpec = Field(
        default_factory=HeartbeatSpec,
        description="Heartbeat logical messages, so an idle slot still advances and WAL is released.",
    )
    connect_timeout: PositiveDuration = Field(
        default="10s", validate_default=True, description=_CONNECT_TIMEOUT
    )


class MysqlSourceSpec(SpecModel):
    """Capture changes from MySQL or MariaDB by reading the row-based binlog."""

    host: NonEmptyStr = Field(description=_HOST)
    port: Port = Field(default=3306, description="TCP port of the MySQL or MariaDB server.")
    user: CredentialField = Field(
        description="Replication user: a string (may use `${ENV_NAME}`) or a secretKeyRef."
    )
    password: CredentialField | None = Field(default=None, description=_PASSWORD)
    ssl_mode: MysqlSslMode = Field(
        default=MysqlSslMode.PREFER,
        description="TLS mode: disable, prefer, require, verify-ca or verify-full (MySQL's VERIFY_IDENTITY).",
    )
    tables: TablePatterns = Field(
        description=(
            "Tables to capture, as `database.table` patterns; `*` matches any run of characters, "
            "e.g. `shop.orders`, `shop.order_*`, `inventory.*`."
        )
    )
    server_id: ServerId | None = Field(
        default=None,
        description=(
            "Replica server_id used to read the binlog (1 to 4294967295); it must be unique among "
            "the server's replicas. Default: derived from the Pipeline's namespace and name."
        ),
    )
    heartbeat: HeartbeatSpec = Field(
        default_factory=HeartbeatSpec,
        description="Binlog heartbeats, so an idle connection is noticed and the position still advances.",
    )
    connect_timeout: PositiveDuration = Field(
        default="10s", validate_default=True, description=_CONNECT_TIMEOUT
    )


class SourceSpec(OneOfModel):
    """The database to capture changes from; set exactly one of `postgres` or `mysql`."""

    variants = ("postgres", "mysql")

    postgres: PostgresSourceSpec | None = Field(
        default=None, description="Capture from PostgreSQL via logical replication."
    )
    mysql: MysqlSourceSpec | None = Field(
        default=None, description="Capture from MySQL or MariaDB via the row-based binlog."
    )

    @property
    def config(self) -> PostgresSourceSpec | MysqlSourceSpec:
        """The settings of whichever source is set."""
        chosen = self.postgres or self.mysql
        if chosen is None:
            raise AssertionError("validation guarantees one source")
        return chosen
