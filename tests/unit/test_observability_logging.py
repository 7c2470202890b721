"""configure_logging: JSON lines for structlog and stdlib loggers, level spec, console, redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import structlog

from deltaforge.observability import LOG_ENV_VAR, configure_logging, get_logger, parse_level_spec

NAMED = ("deltaforge", "deltaforge.sinks", "deltaforge.sinks.kafka", "deltaforge.coordinator", "aiokafka")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging changes process-wide state; give it back to pytest after each test."""
    monkeypatch.delenv(LOG_ENV_VAR, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in NAMED}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def _configure(spec: str | None = None, fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(spec, fmt, stream=stream)
    return stream


def test_json_lines_carry_timestamp_level_logger_and_bound_fields() -> None:
    stream = _configure("info")
    get_logger("deltaforge.coordinator", pipeline="orders", tenant="shop").info("batch_sent", events=3)

    [line] = _lines(stream)
    assert line["event"] == "batch_sent"
    assert line["level"] == "info"
    assert line["logger"] == "deltaforge.coordinator"
    assert (line["pipeline"], line["tenant"], line["events"]) == ("orders", "shop", 3)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0)


def test_level_spec_filters_per_logger_for_structlog_and_stdlib() -> None:
    stream = _configure("warning,deltaforge.sinks.kafka=debug,aiokafka=error")
    get_logger("deltaforge.sinks.kafka").debug("kafka_debug")
    get_logger("deltaforge.sinks.kafka.producer").debug("child_inherits")
    get_logger("deltaforge.coordinator").info("coordinator_info")
    get_logger("deltaforge.coordinator").warning("coordinator_warning")
    logging.getLogger("aiokafka").warning("library warning")
    logging.getLogger("aiokafka").error("library error %s", "boom")
    logging.getLogger("psycopg").warning("other library warning")

    events = [(line["logger"], line["event"], line["level"]) for line in _lines(stream)]
    assert events == [
        ("deltaforge.sinks.kafka", "kafka_debug", "debug"),
        ("deltaforge.sinks.kafka.producer", "child_inherits", "debug"),
        ("deltaforge.coordinator", "coordinator_warning", "warning"),
        ("aiokafka", "library error boom", "error"),
        ("psycopg", "other library warning", "warning"),
    ]


def test_spec_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_ENV_VAR, "error")
    stream = _configure()
    get_logger("deltaforge").warning("hidden")
    get_logger("deltaforge").error("shown")
    assert [line["event"] for line in _lines(stream)] == ["shown"]

    stream = _configure("debug")
    get_logger("deltaforge").debug("argument_wins")
    assert [line["event"] for line in _lines(stream)] == ["argument_wins"]


def test_reconfiguring_drops_earlier_overrides_and_handlers() -> None:
    first = _configure("info,deltaforge.sinks=debug")
    second = _configure("info")
    get_logger("deltaforge.sinks").debug("no_longer_debug")
    get_logger("deltaforge.sinks").info("once")

    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]


def test_console_format_is_readable_text() -> None:
    stream = _configure("info", fmt="console")
    get_logger("deltaforge.coordinator", pipeline="orders").info("batch_sent", events=3)

    text = stream.getvalue()
    assert "batch_sent" in text
    assert "events=3" in text
    assert "pipeline=orders" in text
    assert "deltaforge.coordinator" in text
    assert not text.lstrip().startswith("{")


def test_exceptions_are_logged_with_their_traceback() -> None:
    stream = _configure("info")
    try:
        raise RuntimeError("connection to postgresql://cdc:hunter2@pg/shop failed")
    except RuntimeError:
        get_logger("deltaforge").exception("crashed")

    [line] = _lines(stream)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "RuntimeError" in line["exception"]
    assert "hunter2" not in line["exception"]


@pytest.mark.parametrize(
    ("spec", "bad_part"),
    [
        ("info,deltaforge=verbose", "deltaforge=verbose"),
        ("loud", "loud"),
        ("info,debug", "debug"),
        ("=debug", "=debug"),
        ("info,bad name=debug", "bad name=debug"),
    ],
)
def test_invalid_spec_names_the_bad_part(spec: str, bad_part: str) -> None:
    with pytest.raises(ValueError, match="invalid log level spec part") as error:
        configure_logging(spec, stream=io.StringIO())
    assert repr(bad_part) in str(error.value)


def test_invalid_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="'xml'"):
        configure_logging("info", "xml", stream=io.StringIO())


def test_parse_level_spec() -> None:
    spec = parse_level_spec(" debug , aiokafka = WARNING,kafka=off ")
    assert spec.default == logging.DEBUG
    assert spec.overrides == {"aiokafka": logging.WARNING, "kafka": logging.CRITICAL + 10}
    assert parse_level_spec("").default == logging.INFO
    assert parse_level_spec("deltaforge=debug").default == logging.INFO


def test_secrets_are_redacted_from_structlog_and_stdlib_lines() -> None:
    stream = _configure("info")
    get_logger("deltaforge").info(
        "connecting",
        password="hunter2",
        sasl_plain_password="hunter2",
        api_token="hunter2",
        credentials={"user": "cdc", "secret": "hunter2"},
        options={"auth": {"Password": "hunter2"}, "hosts": ["a", "b"]},
        dsn="postgresql://cdc:hunter2@pg.shop.svc:5432/shop",
        conninfo="host=pg user=cdc password=hunter2 dbname=shop",
        config_repr="{'host': 'pg', 'password': 'hunter2', 'port': 5432}",
        url="https://api.example/v1?user=cdc&token=hunter2&page=2",
        user="cdc",
    )
    logging.getLogger("psycopg").warning(
        "retrying redis://:hunter2@cache:6379/0", extra={"secret_key": "hunter2"}
    )

    structured, foreign = _lines(stream)
    assert "hunter2" not in stream.getvalue()
    assert structured["password"] == "***"
    assert structured["credentials"] == "***"
    assert structured["options"] == {"auth": {"Password": "***"}, "hosts": ["a", "b"]}
    assert structured["dsn"] == "postgresql://cdc:***@pg.shop.svc:5432/shop"
    assert structured["conninfo"] == "host=pg user=cdc password=*** dbname=shop"
    assert structured["config_repr"] == "{'host': 'pg', 'password': ***, 'port': 5432}"
    assert structured["url"] == "https://api.example/v1?user=cdc&token=***&page=2"
    assert structured["user"] == "cdc"
    assert foreign["event"] == "retrying redis://:***@cache:6379/0"
    assert foreign["secret_key"] == "***"
