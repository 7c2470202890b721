"""Connecting to MySQL/MariaDB, and PyMySQL errors turned into clear source errors.

A wrong password or a missing privilege is a SourceConfigError (retrying cannot fix it); a
refused or dropped connection is SourceUnavailable (the server may be restarting).
"""

from __future__ import annotations

import pymysql

from deltaforge.sources.errors import SourceConfigError, SourceUnavailable
from deltaforge.sources.mysql.config import MysqlSettings

ER_ACCESS_DENIED = 1045
ER_DBACCESS_DENIED = 1044
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_TABLEACCESS_DENIED = 1142
ER_NO_SUCH_USER_HOST = 1130  # "Host ... is not allowed to connect"
ER_MASTER_FATAL_READING_BINLOG = 1236
ER_MARIADB_DUPLICATE_SERVER_ID = 4052  # "A slave with the same server_uuid/server_id is already connected"
CR_AUTH_PLUGIN_CANNOT_LOAD = 2059


def error_code(error: BaseException) -> int | None:
    args: tuple[object, ...] = error.args
    return args[0] if args and isinstance(args[0], int) else None


def error_text(error: BaseException) -> str:
    args: tuple[object, ...] = error.args
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(error) or type(error).__name__


def is_duplicate_server_id(error: BaseException) -> bool:
    """Another replica connected with our server_id (MariaDB 4052; MySQL 1236 with this text)."""
    return error_code(error) == ER_MARIADB_DUPLICATE_SERVER_ID or "same server_uuid/server_id" in error_text(
        error
    )


def translate(error: BaseException, settings: MysqlSettings) -> Exception:
    """A connection-time error as SourceConfigError (fix the spec or the server) or SourceUnavailable."""
    code, text = error_code(error), error_text(error)
    if code == ER_ACCESS_DENIED:
        return SourceConfigError(
            f"MySQL at {settings.host}:{settings.port} rejected user '{settings.user}' ({text}): "
            "check spec.source.mysql.user and spec.source.mysql.password (and the Secret they refer to)"
        )
    if code == ER_NO_SUCH_USER_HOST:
        return SourceConfigError(
            f"MySQL at {settings.host}:{settings.port} does not let '{settings.user}' connect from this host "
            f"({text}): create the user for this host, e.g. CREATE USER '{settings.user}'@'%' ..."
        )
    if code in (ER_SPECIFIC_ACCESS_DENIED, ER_DBACCESS_DENIED, ER_TABLEACCESS_DENIED):
        return SourceConfigError(
            f"permission denied for '{settings.user}' at {settings.host}:{settings.port}: {text}"
        )
    if code == CR_AUTH_PLUGIN_CANNOT_LOAD or "cryptography" in text:
        return SourceConfigError(
            f"cannot authenticate '{settings.user}' at {settings.host}:{settings.port} ({text}): "
            "MySQL 8's caching_sha2_password needs TLS (spec.source.mysql.sslMode: require) or the Python "
            "'cryptography' package for its RSA key exchange; see docs/mysql.md"
        )
    return SourceUnavailable(f"MySQL at {settings.where}: {text}")


def connect(settings: MysqlSettings, *, read_timeout: float | None = None) -> pymysql.connections.Connection:
    """A control connection (UTC session, autocommit); blocking, so call it from a thread."""
    try:
        return pymysql.connect(**settings.connect_kwargs(read_timeout=read_timeout))
    except pymysql.Error as error:
        raise translate(error, settings) from error
    except OSError as error:
        raise SourceUnavailable(f"MySQL at {settings.where}: {error}") from error
