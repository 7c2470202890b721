"""From a validated Pipeline spec to runtime objects: source, processors, sinks, checkpoint store.

The one place that reads the spec for the runtime; sources, sinks and processors take plain
values, so they stay independent of the manifest's shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltaforge.checkpoints.file import FileCheckpointStore
from deltaforge.checkpoints.kafka import KafkaCheckpointStore
from deltaforge.envelopes import encode_key, encoder_for
from deltaforge.events import ChangeEvent, Checkpoint, Op
from deltaforge.observability.metrics import PipelineMetrics
from deltaforge.processors.builtin import FilterProcessor, MaskProcessor, SelectProcessor
from deltaforge.protocols import CheckpointStore, Processor
from deltaforge.sinks.base import Sink
from deltaforge.sinks.deadletter import DeadLetter
from deltaforge.sinks.deadletter import summary as dead_letter_summary
from deltaforge.sinks.kafka import KafkaSink, KafkaTransaction
from deltaforge.sinks.stdout import StdoutSink
from deltaforge.sources.patterns import TablePatterns
from deltaforge.sources.postgres.connection import PostgresSettings
from deltaforge.sources.postgres.source import PostgresSource, PostgresSourceConfig
from deltaforge.sources.postgres.stream import parse_lsn
from deltaforge.spec import Pipeline, Template, resolve

if TYPE_CHECKING:
    from deltaforge.sources.mysql.source import MysqlSource

Log = Callable[..., None]
DEFAULT_CHECKPOINT_DIR = ".deltaforge"


class Secrets:
    """Resolves credentials of one pipeline from the environment and the mounted Secrets."""

    def __init__(self, environ: Mapping[str, str] | None = None, secrets_dir: str | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.secrets_dir = secrets_dir

    def __call__(self, credential: Any, field: str) -> str | None:
        if credential is None:
            return None
        return resolve(credential, self.environ, self.secrets_dir, field=field)


def _patterns(tables: list[str] | None) -> TablePatterns | None:
    return TablePatterns(tables) if tables else None


def build_processors(pipeline: Pipeline, secrets: Secrets) -> list[Processor]:
    processors: list[Processor] = []
    for position, processor in enumerate(pipeline.spec.processors):
        name = f"{processor.kind}-{position}"
        if processor.filter is not None:
            ops = [Op(op) for op in processor.filter.ops] if processor.filter.ops else None
            processors.append(FilterProcessor(name, ops=ops, tables=_patterns(processor.filter.tables)))
        elif processor.select is not None:
            spec = processor.select
            processors.append(
                SelectProcessor(
                    name, tables=_patterns(spec.tables), include=spec.include, exclude=spec.exclude
                )
            )
        elif processor.mask is not None:
            spec_mask = processor.mask
            salt = secrets(spec_mask.salt, f"spec.processors[{position}].mask.salt") or ""
            processors.append(
                MaskProcessor(
                    name, tables=_patterns(spec_mask.tables), columns=spec_mask.columns,
                    method=spec_mask.method.value, salt=salt,
                )
            )  # fmt: skip
    return processors


def _router(template: Template) -> Callable[[ChangeEvent], str]:
    """The rendered template of an event's table, rendered once per table.

    Consecutive events mostly share their SourceInfo object: an identity check answers those
    without building a lookup key.
    """
    cache: dict[tuple[str, str, str], str] = {}
    last: list[Any] = [None, ""]  # the last SourceInfo and its answer

    def route(event: ChangeEvent) -> str:
        source = event.source
        if source is last[0]:
            answer: str = last[1]
            return answer
        key = (source.db, source.schema, source.table)
        found = cache.get(key)
        if found is None:
            found = cache[key] = template.render(*key)
        last[0], last[1] = source, found
        return found

    return route


def _key_function(template: Template | None) -> Callable[[ChangeEvent], bytes | None]:
    """The Kafka key: the rendered `key` template, or by default the row's primary key."""
    if template is None:
        return lambda event: encode_key(event.key)
    route = _router(template)
    return lambda event: route(event).encode()


def build_sinks(pipeline: Pipeline, metrics: PipelineMetrics, secrets: Secrets, log: Log) -> list[Sink]:
    sinks: list[Sink] = []

    def log_failure(sink: str, error: Exception, delay: float) -> None:
        log(
            "sink_write_failed",
            level="warning",
            sink=sink,
            error=str(error),
            retry_in_seconds=round(delay, 2),
        )

    def log_dead_letters(sink: str, letters: list[DeadLetter]) -> None:
        log("events_dead_lettered", level="warning", sink=sink, **dead_letter_summary(letters))

    context = {"pipeline": pipeline.name, "tenant": pipeline.tenant}
    for position, sink in enumerate(pipeline.spec.sinks):
        metrics.register_sink(sink.name)
        if sink.kafka is not None:
            kafka = sink.kafka
            key_for = _key_function(Template(kafka.key, **context) if kafka.key else None)
            transaction = None
            if kafka.exactly_once:
                transactional_id = kafka.transactional_id or (
                    f"deltaforge.{pipeline.namespace}.{pipeline.name}.{sink.name}"
                )
                transaction = KafkaTransaction(transactional_id, kafka.checkpoint_topic)
            kafka_sink = KafkaSink(
                sink.name,
                required=sink.required,
                bootstrap_servers=list(kafka.bootstrap_servers),
                topic_for=_router(Template(kafka.topic, **context)),
                key_for=key_for,
                encode=encoder_for(kafka.envelope.value, pipeline.name),
                failures=metrics,
                compression=kafka.compression.value,
                linger_ms=kafka.linger_ms,
                max_request_size=int(kafka.max_request_size),
                client_id=kafka.client_id,
                log=log_failure,
                transaction=transaction,
                dead_letter_topic_for=_router(Template(kafka.dead_letter_topic, **context)),
                on_dead_letters=log_dead_letters,
            )
            metrics.sink_backpressure_from(sink.name, kafka_sink.backlog)
            sinks.append(kafka_sink)
        elif sink.redis is not None:
            # Imported on use, like the MySQL source and the Kubernetes client: a worker imports
            # only what its pipeline runs (each costs a tenth of a second or more at start-up).
            from deltaforge.sinks.redis import RedisSink  # noqa: PLC0415

            redis = sink.redis
            url = secrets(redis.url, f"spec.sinks[{position}].redis.url")
            assert url is not None
            sinks.append(
                RedisSink(
                    sink.name, required=sink.required, url=url,
                    stream_for=_router(Template(redis.stream, **context)),
                    encode=encoder_for(redis.envelope.value, pipeline.name),
                    failures=metrics, max_len=redis.max_len, log=log_failure,
                    dead_letter_stream_for=_router(Template(redis.dead_letter_stream, **context)),
                    on_dead_letters=log_dead_letters,
                    entry_id=postgres_entry_id() if redis.idempotent else None,
                )
            )  # fmt: skip
        elif sink.stdout is not None:
            sinks.append(
                StdoutSink(
                    sink.name, required=sink.required,
                    encode=encoder_for(sink.stdout.envelope.value, pipeline.name), pretty=sink.stdout.pretty,
                )
            )  # fmt: skip
    return sinks


def postgres_entry_id() -> Callable[[ChangeEvent], str]:
    """Redis stream entry ids `<commit LSN>-<index>`: they grow in commit order, as Redis requires."""
    last: list[Any] = [None, 0]  # the last SourceInfo and its commit LSN

    def entry_id(event: ChangeEvent) -> str:
        if event.source is not last[0]:
            last[0], last[1] = event.source, parse_lsn(event.source.position)
        return f"{last[1]}-{event.index}"

    return entry_id


def build_checkpoints(pipeline: Pipeline, sinks: list[Sink]) -> CheckpointStore:
    """The configured store; without one, a file under ./.deltaforge (in a pod: the ConfigMap).
    An exactly-once Kafka sink keeps the position in Kafka instead (validation allows no other)."""
    for sink in sinks:
        if isinstance(sink, KafkaSink) and sink.transaction is not None:
            return KafkaCheckpointStore(sink, sink.bootstrap_servers)
    checkpoint = pipeline.spec.checkpoint
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if checkpoint is not None and checkpoint.file is not None:
        return FileCheckpointStore(Path(checkpoint.file.path))
    if (checkpoint is not None and checkpoint.kubernetes is not None) or in_pod:
        # Imported here: the Kubernetes client takes about half a second to import, which only
        # pipelines that keep their position in a ConfigMap should pay at start-up.
        from deltaforge.checkpoints.kubernetes import KubernetesCheckpointStore  # noqa: PLC0415

        configured = checkpoint.kubernetes.config_map if checkpoint and checkpoint.kubernetes else None
        name = configured or f"{pipeline.name}-checkpoint"
        return KubernetesCheckpointStore(name, pipeline.namespace, pipeline=pipeline.name)
    return FileCheckpointStore(Path(DEFAULT_CHECKPOINT_DIR) / f"{pipeline.namespace}.{pipeline.name}.json")


def build_source(
    pipeline: Pipeline, resume: Checkpoint | None, metrics: PipelineMetrics, secrets: Secrets, log: Log
) -> PostgresSource | MysqlSource:
    mysql = pipeline.spec.source.mysql
    if mysql is not None:
        return _build_mysql_source(pipeline, resume, metrics, secrets, log)
    postgres = pipeline.spec.source.postgres
    assert postgres is not None, "validation guarantees one source"
    settings = PostgresSettings(
        host=postgres.host,
        port=postgres.port,
        database=postgres.database,
        user=secrets(postgres.user, "spec.source.postgres.user") or "",
        password=secrets(postgres.password, "spec.source.postgres.password"),
        sslmode=postgres.ssl_mode.value,
        connect_timeout=float(postgres.connect_timeout),
        application_name=f"deltaforge-{pipeline.name}"[:63],
    )
    config = PostgresSourceConfig(
        settings=settings,
        patterns=TablePatterns(list(postgres.tables)),
        slot=postgres.slot.name or "",
        create_slot=postgres.slot.create,
        publication=postgres.publication.name or "",
        create_publication=postgres.publication.create,
        heartbeat_interval=float(postgres.heartbeat.interval),
    )
    return PostgresSource(config, resume=resume, metrics=metrics, log=log)


def _build_mysql_source(
    pipeline: Pipeline, resume: Checkpoint | None, metrics: PipelineMetrics, secrets: Secrets, log: Log
) -> MysqlSource:
    from deltaforge.sources.mysql.config import MysqlSettings, MysqlSourceConfig, derive_server_id  # noqa: PLC0415
    from deltaforge.sources.mysql.source import MysqlSource  # noqa: PLC0415

    mysql = pipeline.spec.source.mysql
    assert mysql is not None
    settings = MysqlSettings(
        host=mysql.host,
        port=mysql.port,
        user=secrets(mysql.user, "spec.source.mysql.user") or "",
        password=secrets(mysql.password, "spec.source.mysql.password"),
        ssl_mode=mysql.ssl_mode.value,
        connect_timeout=float(mysql.connect_timeout),
    )
    config = MysqlSourceConfig(
        settings=settings,
        patterns=TablePatterns(list(mysql.tables)),
        server_id=mysql.server_id or derive_server_id(pipeline.namespace, pipeline.name),
        heartbeat_interval=float(mysql.heartbeat.interval),
        pipeline=f"{pipeline.namespace}/{pipeline.name}",
    )
    return MysqlSource(config, resume=resume, metrics=metrics, log=log)
