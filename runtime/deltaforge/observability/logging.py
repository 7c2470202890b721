"""Structured logging for the worker: one formatter for structlog and standard-library loggers.

Every line, ours or a library's (aiokafka, psycopg, pymysqlreplication…), goes through the same
`ProcessorFormatter` on one root handler, so the output is uniform JSON (or console text) and the
level spec (`info,deltaforge.sinks.kafka=debug,aiokafka=warning`) is plain standard-library logger
levels. Secrets are redacted as the last step before rendering (after tracebacks are formatted),
whoever logged them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LOG_ENV_VAR: Final = "DELTAFORGE_LOG"
LOG_FORMATS: Final = ("json", "console")
REDACTED: Final = "***"

_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
_LOGGER_NAME = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")
_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|pwd|secret|token|credential|api[_-]?key|private[_-]?key|authorization|cookie",
    re.IGNORECASE,
)
# Inside any logged string: `scheme://user:password@host`, and `password=…` / `'password': …` as in
# libpq conninfo, query strings and reprs of configuration dicts.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<tail>@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(
    r"(?P<head>(?:passw(?:or)?d|secret|token)['\"]?\s*[=:]\s*)(?:'[^']*'|\"[^\"]*\"|[^\s,;&}]+)",
    re.IGNORECASE,
)
_FIRST_KEYS: Final = ("timestamp", "level", "logger", "event")


@dataclass(frozen=True)
class LevelSpec:
    """A parsed `DELTAFORGE_LOG` value: the root level and per-logger overrides."""

    default: int = logging.INFO
    overrides: Mapping[str, int] = field(default_factory=dict)


def parse_level_spec(spec: str) -> LevelSpec:
    """Parses `info,deltaforge.sinks.kafka=debug`; a ValueError names the part that is wrong."""
    default: int | None = None
    overrides: dict[str, int] = {}
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, level_name = part.partition("=")
        name, level_name = name.strip(), level_name.strip()
        if not sep:
            name, level_name = "", name
        level = _LEVELS.get(level_name.lower())
        if level is None:
            raise ValueError(
                f"invalid log level spec part {part!r}: unknown level {level_name!r} "
                f"(expected one of {', '.join(_LEVELS)})"
            )
        if not sep:
            if default is not None:
                raise ValueError(f"invalid log level spec part {part!r}: the default level is set twice")
            default = level
        elif not _LOGGER_NAME.fullmatch(name):
            raise ValueError(f"invalid log level spec part {part!r}: {name!r} is not a logger name")
        else:
            overrides[name] = level
    return LevelSpec(logging.INFO if default is None else default, overrides)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if "=" in value or ":" in value:
            value = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<tail>", value)
            return _KV_PASSWORD.sub(rf"\g<head>{REDACTED}", value)
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Masks values under secret-looking keys and passwords inside URLs/DSNs, at any depth."""
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif key not in ("exc_info", "stack_info"):
            event_dict[key] = _scrub(value)
    return event_dict


def _orjson_default(value: object) -> str:
    return str(value)


def _render_json(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return orjson.dumps(ordered, default=_orjson_default, option=orjson.OPT_NON_STR_KEYS).decode()


_SHARED: Final[tuple[Processor, ...]] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


@dataclass
class _Installed:
    """What the last `configure_logging` changed, so the next call can undo exactly that."""

    handler: logging.Handler | None = None
    overridden: set[str] = field(default_factory=set)


_installed = _Installed()


def configure_logging(
    level_spec: str | None = None,
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
) -> LevelSpec:
    """Routes structlog and stdlib logging to `stream` (stderr) as JSON lines or console text.

    `level_spec` wins over `$DELTAFORGE_LOG`, which wins over `info`. Calling it again replaces the
    previous configuration (handler and per-logger levels), so tests and the CLI can reconfigure.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    spec = parse_level_spec(level_spec if level_spec is not None else os.environ.get(LOG_ENV_VAR, ""))
    out = stream if stream is not None else sys.stderr

    renderer: tuple[Processor, ...]
    if fmt == "json":
        renderer = (structlog.processors.format_exc_info, redact_secrets, _render_json)
    else:
        renderer = (redact_secrets, structlog.dev.ConsoleRenderer(colors=out.isatty()))
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=(structlog.stdlib.ExtraAdder(), *_SHARED),
            processors=(structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer),
        )
    )

    root = logging.getLogger()
    if _installed.handler is not None:
        root.removeHandler(_installed.handler)
    root.addHandler(handler)
    root.setLevel(spec.default)
    for name in _installed.overridden - spec.overrides.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in spec.overrides.items():
        logging.getLogger(name).setLevel(level)
    _installed.handler = handler
    _installed.overridden = set(spec.overrides)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before `configure_logging` (an import-time log, a test)
        # would otherwise keep structlog's defaults and bypass the root handler for good.
        cache_logger_on_first_use=False,
    )
    return spec


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger named like the module (so the level spec applies), with `bound` on every line."""
    return structlog.stdlib.get_logger(name, **bound)
