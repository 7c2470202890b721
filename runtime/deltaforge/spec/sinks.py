"""Where changes go: Kafka topics, Redis streams or standard output."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from deltaforge.spec.base import DnsLabel, NonEmptyStr, OneOfModel, SpecModel
from deltaforge.spec.credentials import CredentialField
from deltaforge.spec.templates import TemplateStr, literal_text
from deltaforge.spec.units import PositiveQuantity

_KAFKA_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_ENVELOPE = (
    "Event format: `native` (DeltaForge's compact JSON), `debezium` (Debezium-compatible "
    "envelope) or `cloudevents` (CloudEvents 1.0 structured JSON)."
)


class Envelope(StrEnum):
    """The shape each change event is serialized into."""

    NATIVE = "native"
    DEBEZIUM = "debezium"
    CLOUDEVENTS = "cloudevents"


class Compression(StrEnum):
    """Kafka producer compression codec."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


def _split_servers(value: object) -> object:
    if isinstance(value, str):
        return [server.strip() for server in value.split(",") if server.strip()]
    return value


def _check_server(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r} is not host:port, e.g. kafka:9092")
    return value


def _check_topic(value: str) -> str:
    if not _KAFKA_TOPIC_CHARS.fullmatch(literal_text(value)):
        raise ValueError(
            f"{value!r} has characters a Kafka topic cannot contain; outside placeholders use only "
            "letters, digits, '.', '_' and '-'"
        )
    return value


BootstrapServers = Annotated[
    list[Annotated[str, AfterValidator(_check_server)]],
    BeforeValidator(_split_servers),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        },
    ),
]
TopicTemplate = Annotated[TemplateStr, AfterValidator(_check_topic)]


def _templates_help(default: str) -> str:
    return (
        "Placeholders: ${source.db}, ${source.schema}, ${source.table}, ${pipeline}, ${tenant}. "
        f"Default: `{default}`."
    )


class KafkaSinkSpec(SpecModel):
    """Write change events to Kafka topics."""

    bootstrap_servers: BootstrapServers = Field(
        description="Kafka brokers to bootstrap from: `host:port` entries, as a list or a comma-separated string."
    )
    topic: TopicTemplate = Field(
        default="${source.schema}.${source.table}",
        description="Topic name template. " + _templates_help("${source.schema}.${source.table}"),
    )
    key: TemplateStr | None = Field(
        default=None,
        description=(
            "Message key template. Default (unset): the row's primary key, which keeps every change "
            "of a row in order on one partition. Placeholders: ${source.db}, ${source.schema}, "
            "${source.table}, ${pipeline}, ${tenant}."
        ),
    )
    envelope: Envelope = Field(default=Envelope.NATIVE, description=_ENVELOPE)
    compression: Compression = Field(
        default=Compression.ZSTD,
        description=(
            "Compression codec: none, gzip, snappy, lz4 or zstd. The default zstd makes change events "
            "about 3x smaller than lz4 and costs less CPU than lz4 at Kafka's level 9 (measured in bench/)."
        ),
    )
    exactly_once: bool = Field(
        default=False,
        description=(
            "Write each batch and the source position it reaches in one Kafka transaction, so "
            "consumers with `isolation.level=read_committed` see every change exactly once, across "
            "crashes. The position then lives in `checkpointTopic`; every other sink must be "
            "`required: false` and `spec.checkpoint` unset. See docs/guarantees.md."
        ),
    )
    transactional_id: NonEmptyStr | None = Field(
        default=None,
        description=(
            "Kafka transactional id of the exactly-once producer; a second worker with the same id "
            "fences the first. Default: `deltaforge.<namespace>.<pipeline>.<sink>`."
        ),
    )
    checkpoint_topic: Annotated[str, AfterValidator(_check_topic), Field(min_length=1)] = Field(
        default="deltaforge.checkpoints",
        description=(
            "Compacted topic that holds exactly-once positions, one record per transactional id; "
            "created (compacted, one partition) if missing."
        ),
    )
    dead_letter_topic: TopicTemplate = Field(
        default="${pipeline}.deadletter",
        description=(
            "Where an event goes that cannot be written (it cannot be serialized, or its key and "
            "value exceed `maxRequestSize`): a small JSON record with the reason, table, key, "
            "position and event id, instead of the event, so one bad row never stops the pipeline "
            "(docs/guarantees.md). Create it, or let the broker auto-create it. "
            + _templates_help("${pipeline}.deadletter")
        ),
    )
    client_id: NonEmptyStr | None = Field(
        default=None, description="Kafka client id. Default: derived from the Pipeline and sink names."
    )
    linger_ms: Annotated[int, Field(ge=0)] = Field(
        default=5, description="How long the producer waits to fill a batch, in milliseconds."
    )
    max_request_size: PositiveQuantity = Field(
        default="1Mi",
        validate_default=True,
        description="Largest produce request the producer sends, e.g. `1Mi`.",
    )


class RedisSinkSpec(SpecModel):
    """Append change events to Redis streams."""

    url: CredentialField = Field(
        description=(
            "Redis URL such as `redis://host:6379/0` (`rediss://` for TLS); a credential, since it "
            "may hold a password: a string (may use `${ENV_NAME}`) or a secretKeyRef."
        )
    )
    stream: TemplateStr = Field(
        default="deltaforge:${source.schema}.${source.table}",
        description="Stream key template. " + _templates_help("deltaforge:${source.schema}.${source.table}"),
    )
    max_len: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description="Trim each stream to about this many entries (XADD MAXLEN ~). Default: no trimming.",
    )
    envelope: Envelope = Field(default=Envelope.NATIVE, description=_ENVELOPE)
    idempotent: bool = Field(
        default=False,
        description=(
            "Give each entry the id `<commit LSN>-<index in transaction>` instead of a time-based "
            "one, so Redis refuses a change written before: replays after a crash leave no "
            "duplicate. PostgreSQL sources only. The streams must hold only entries written this "
            "way (their ids are not timestamps); see docs/guarantees.md."
        ),
    )
    dead_letter_stream: TemplateStr = Field(
        default="deltaforge:${pipeline}:deadletter",
        description=(
            "Stream for events that cannot be serialized: a small JSON entry with the reason, "
            "table, key, position and event id, instead of the event (docs/guarantees.md). "
            + _templates_help("deltaforge:${pipeline}:deadletter")
        ),
    )


class StdoutSinkSpec(SpecModel):
    """Print change events to standard output, one JSON document per line."""

    envelope: Envelope = Field(default=Envelope.NATIVE, description=_ENVELOPE)
    pretty: bool = Field(default=False, description="Indent each event over several lines for reading.")


class SinkSpec(OneOfModel):
    """A named destination; set exactly one of `kafka`, `redis` or `stdout`."""

    variants = ("kafka", "redis", "stdout")

    name: DnsLabel = Field(
        description="Unique name of the sink within the Pipeline; used in metrics, logs and status."
    )
    required: bool = Field(
        default=True,
        description=(
            "Whether the source position may advance only after this sink has written the change "
            "(see commitPolicy). A sink that is not required may miss changes while it is failing."
        ),
    )
    kafka: KafkaSinkSpec | None = Field(default=None, description="Write to Kafka topics.")
    redis: RedisSinkSpec | None = Field(default=None, description="Append to Redis streams.")
    stdout: StdoutSinkSpec | None = Field(default=None, description="Print to standard output.")

    @property
    def config(self) -> KafkaSinkSpec | RedisSinkSpec | StdoutSinkSpec:
        """The settings of whichever sink kind is set."""
        chosen = self.kafka or self.redis or self.stdout
        if chosen is None:
            raise AssertionError("validation guarantees one sink kind")
        return chosen
