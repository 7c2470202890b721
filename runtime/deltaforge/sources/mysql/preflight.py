"""Checks before streaming: binlog settings, grants, tables, server id, and whether our position
still exists on the server.

Every failure is one SourceConfigError naming the setting and the fix, raised before the first
change is read. The checks on values (`check_variables`, `missing_grants`, `purged`) are pure so
that MySQL-only cases are tested without a MySQL server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql

from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.mysql.config import SYSTEM_SCHEMAS, MysqlSourceConfig
from deltaforge.sources.mysql.connection import connect, translate
from deltaforge.sources.mysql.position import BinlogPosition, MariadbGtidState, MysqlGtidSet, ResumePoint

VARIABLES = (
    "version", "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata",
    "binlog_transaction_compression", "log_bin_compress", "binlog_row_value_options", "gtid_mode",
    "server_id", "gtid_binlog_pos", "gtid_executed", "gtid_purged",
)  # fmt: skip
_GRANT = re.compile(r"^GRANT (.+?) ON (\S+) TO ", re.IGNORECASE)
_FIX_RESTART = "in the server's configuration (my.cnf) and restart it"


@dataclass(frozen=True)
class ServerFacts:
    """What preflight learned: the flavor, whether GTIDs are used, and the current position."""

    mariadb: bool
    version: str
    gtid_mode: bool
    current: BinlogPosition  # a point: where a pipeline without a checkpoint starts


def _on(value: str | None) -> bool:
    return (value or "").upper() in ("ON", "1")


def check_variables(variables: Mapping[str, str]) -> None:
    """The server settings the binlog source needs, from SHOW GLOBAL VARIABLES."""
    mariadb = "mariadb" in variables.get("version", "").lower()
    server = "MariaDB" if mariadb else "MySQL"
    if not _on(variables.get("log_bin")):
        raise SourceConfigError(
            f"binary logging is off on the {server} server (log_bin=OFF): set log_bin (e.g. log_bin=mysql-bin) "
            f"and a server_id {_FIX_RESTART}"
        )
    checks = (
        ("binlog_format", "ROW", "SET GLOBAL binlog_format = 'ROW' and set binlog_format=ROW"),
        ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image = 'FULL' and set binlog_row_image=FULL"),
    )
    for name, wanted, fix in checks:
        value = variables.get(name, "")
        if value.upper() != wanted:
            raise SourceConfigError(
                f"{name} is '{value}' on the {server} server, change data capture needs {wanted}: {fix} {_FIX_RESTART}"
            )
    metadata = variables.get("binlog_row_metadata")
    if metadata is None:
        raise SourceConfigError(
            f"the {server} server ({variables.get('version', '?')}) has no binlog_row_metadata: column names must travel "
            "in the binlog, which needs MariaDB 10.5+ or MySQL 8.0.14+; upgrade the server"
        )
    if metadata.upper() != "FULL":
        raise SourceConfigError(
            f"binlog_row_metadata is '{metadata}' on the {server} server, change data capture needs FULL (column names "
            f"and types in the binlog): SET GLOBAL binlog_row_metadata = 'FULL' and set binlog_row_metadata=FULL {_FIX_RESTART}"
        )
    if _on(variables.get("binlog_transaction_compression")):
        raise SourceConfigError(
            "binlog_transaction_compression is ON on the MySQL server: compressed transactions cannot be decoded and "
            "would be lost; SET PERSIST binlog_transaction_compression = OFF"
        )
    if _on(variables.get("log_bin_compress")):
        raise SourceConfigError(
            "log_bin_compress is ON on the MariaDB server: compressed binlog events cannot be decoded and would be "
            f"lost; SET GLOBAL log_bin_compress = OFF and remove log_bin_compress {_FIX_RESTART}"
        )
    if "PARTIAL_JSON" in variables.get("binlog_row_value_options", "").upper():
        raise SourceConfigError(
            "binlog_row_value_options is PARTIAL_JSON on the MySQL server: JSON updates would arrive as diffs, "
            "not values; SET PERSIST binlog_row_value_options = ''"
        )


def missing_grants(grant_lines: Sequence[str]) -> list[str]:
    """The global privileges of SHOW GRANTS that the source needs and the user lacks.

    Privileges that come through a role are not listed by SHOW GRANTS; when the user has a role
    we report nothing and let the server's own errors speak.
    """
    granted: set[str] = set()
    selects = False
    for line in grant_lines:
        found = _GRANT.match(line)
        if found is None:
            if line.upper().startswith("GRANT ") and " ON " not in line.upper():
                return []  # a role grant
            continue
        privileges = {part.strip().upper() for part in found.group(1).split(",")}
        target = found.group(2)
        if target == "*.*":
            granted |= privileges
        selects = selects or "SELECT" in privileges or "ALL PRIVILEGES" in privileges
    if "ALL PRIVILEGES" in granted or "ALL" in granted:
        return []
    missing = []
    if "REPLICATION SLAVE" not in granted and "REPLICATION REPLICA" not in granted:
        missing.append("REPLICATION SLAVE")
    if not granted & {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"}:
        missing.append("REPLICATION CLIENT (MariaDB: BINLOG MONITOR)")
    if not selects:
        missing.append("SELECT")
    return missing


def purged(
    point: ResumePoint, *, mariadb: bool, binlogs: Sequence[str], oldest_state: str, gtid_purged: str
) -> str | None:
    """Why the point we resume from is no longer on the server, or None when it still is."""
    if point.gtid_state is not None:
        if mariadb:
            lost = MariadbGtidState.parse(point.gtid_state).behind(MariadbGtidState.parse(oldest_state))
            if lost:
                return f"the oldest binlog ({binlogs[0] if binlogs else '?'}) starts after GTID {', '.join(lost)}"
            return None
        if not MysqlGtidSet.parse(point.gtid_state).contains(MysqlGtidSet.parse(gtid_purged)):
            return f"gtid_purged ({gtid_purged}) holds transactions the checkpoint ({point.gtid_state}) has not seen"
        return None
    if point.file not in binlogs:
        return f"binlog file {point.file} is not among the server's binlogs ({', '.join(binlogs[:3])}...)"
    return None


def position_lost(position: str, reason: str) -> SourceConfigError:
    return SourceConfigError(
        f"position lost, re-snapshot required: the checkpoint's binlog position ({position}) is no longer on "
        f"the server: {reason}. Changes in between are gone; delete the pipeline's checkpoint (file or ConfigMap) to "
        "start from the current position, re-load the tables, and keep binlogs longer (binlog_expire_logs_seconds)"
    )


def preflight(config: MysqlSourceConfig, resume: ResumePoint | None, checkpoint: str = "") -> ServerFacts:
    """All checks on one control connection; blocking, so call it from a thread."""
    connection = connect(config.settings, read_timeout=30.0)
    try:
        with connection.cursor() as cursor:
            return _checks(cursor, config, resume, checkpoint)
    except pymysql.Error as error:
        raise translate(error, config.settings) from error
    finally:
        connection.close()


def _rows(cursor: Any, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cursor.execute(sql, args)
    return [tuple(row) for row in cursor.fetchall()]


def _checks(
    cursor: Any, config: MysqlSourceConfig, resume: ResumePoint | None, checkpoint: str
) -> ServerFacts:
    placeholders = ", ".join(["%s"] * len(VARIABLES))
    variables = {
        str(name).lower(): str(value)
        for name, value in _rows(
            cursor, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", VARIABLES
        )
    }
    check_variables(variables)
    mariadb = "mariadb" in variables.get("version", "").lower()
    user = config.settings.user
    missing = missing_grants([str(row[0]) for row in _rows(cursor, "SHOW GRANTS")])
    if missing:
        raise SourceConfigError(
            f"user '{user}' lacks {', '.join(missing)} needed to read the binlog: "
            f"GRANT {', '.join(m.split(' (')[0] for m in missing)} ON *.* TO '{user}'@'%'"
            + (" (on MariaDB 10.5+ REPLICATION CLIENT is called BINLOG MONITOR)" if mariadb else "")
        )
    if int(variables.get("server_id", "0") or 0) == config.server_id:
        raise SourceConfigError(
            f"spec.source.mysql.serverId {config.server_id} is the server's own server_id: choose another "
            "(or leave it unset to derive one from the Pipeline's name)"
        )
    _check_tables(cursor, config)
    status = _master_status(cursor, user)
    gtid_mode = mariadb or variables.get("gtid_mode", "OFF").upper() == "ON"
    state = variables.get("gtid_binlog_pos" if mariadb else "gtid_executed", "").replace("\n", "")
    current = BinlogPosition(None, state if gtid_mode else None, str(status[0]), int(status[1]), point=True)
    if resume is not None:
        binlogs = [str(row[0]) for row in _rows(cursor, "SHOW BINARY LOGS")]
        oldest = ""
        if mariadb and binlogs:
            oldest = str(_rows(cursor, "SELECT BINLOG_GTID_POS(%s, 4)", [binlogs[0]])[0][0] or "")
        reason = purged(
            resume, mariadb=mariadb, binlogs=binlogs, oldest_state=oldest,
            gtid_purged=variables.get("gtid_purged", "").replace("\n", ""),
        )  # fmt: skip
        if reason is not None:
            raise position_lost(checkpoint, reason)
    return ServerFacts(
        mariadb=mariadb, version=variables.get("version", ""), gtid_mode=gtid_mode, current=current
    )


def _check_tables(cursor: Any, config: MysqlSourceConfig) -> None:
    tables = [
        (str(schema), str(table))
        for schema, table in _rows(
            cursor,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'",
        )
        if str(schema) not in SYSTEM_SCHEMAS
    ]
    unmatched = config.patterns.unmatched(tables)
    if unmatched:
        raise SourceConfigError(
            f"no table matches {', '.join(repr(p) for p in unmatched)} (spec.source.mysql.tables) on "
            f"{config.settings.host}:{config.settings.port}: check the database and table names, and that "
            f"'{config.settings.user}' has SELECT on them (tables without it are invisible)"
        )


def _master_status(cursor: Any, user: str) -> tuple[Any, ...]:
    try:
        rows = _rows(cursor, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:
        rows = _rows(cursor, "SHOW BINARY LOG STATUS")  # MySQL 8.4 removed SHOW MASTER STATUS
    except pymysql.err.OperationalError as error:
        if error.args and error.args[0] == 1227:
            raise SourceConfigError(
                f"user '{user}' may not read the binlog status ({error.args[-1]}): "
                f"GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%' (MariaDB: BINLOG MONITOR)"
            ) from error
        raise
    if not rows:
        raise SourceConfigError(
            "the server reports no binlog (SHOW MASTER STATUS is empty): set log_bin and restart it"
        )
    return rows[0]
