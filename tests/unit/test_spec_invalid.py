"""Invalid Pipeline manifests: every mistake is reported with its path and a plain message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from deltaforge.spec import (
    Pipeline,
    SpecError,
    load_manifest,
    parse_pipeline,
)
from tests.unit.spec_samples import MINIMAL

Mutation = Callable[[dict[str, Any]], object]


def _postgres(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["spec"]["source"]["postgres"]
    return result


def _kafka(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["spec"]["sinks"][0]["kafka"]
    return result


INVALID: list[tuple[str, Mutation, str, str]] = [
    (
        "two sources",
        lambda m: m["spec"]["source"].update(mysql={"host": "db", "user": "u", "tables": ["shop.orders"]}),
        "spec.source",
        "set exactly one of postgres, mysql; found postgres and mysql",
    ),
    (
        "empty source",
        lambda m: m["spec"].update(source={}),
        "spec.source",
        "set exactly one of postgres, mysql; found none",
    ),
    ("missing source", lambda m: m["spec"].pop("source"), "spec.source", "required field is missing"),
    ("no sinks", lambda m: m["spec"].update(sinks=[]), "spec.sinks", "must not be empty"),
    (
        "too many sinks",
        lambda m: m["spec"].update(sinks=[{"name": f"s{index}", "stdout": {}} for index in range(17)]),
        "spec.sinks",
        "must have at most 16 items",
    ),
    (
        "duplicate sink names",
        lambda m: m["spec"]["sinks"].append({"name": "events", "stdout": {}}),
        "spec.sinks",
        "sink name 'events' is used by sinks[0] and sinks[1]; names must be unique",
    ),
    (
        "table without schema",
        lambda m: _postgres(m).update(tables=["public.orders", "orders"]),
        "spec.source.postgres.tables[1]",
        "'orders' is not a table pattern; write schema.table",
    ),
    (
        "table with a space",
        lambda m: _postgres(m).update(tables=["public.ord ers"]),
        "spec.source.postgres.tables[0]",
        "is not a table pattern",
    ),
    (
        "zero batch size",
        lambda m: m["spec"].update(batch={"maxEvents": 0}),
        "spec.batch.maxEvents",
        "must be greater than 0",
    ),
    (
        "negative batch bytes",
        lambda m: m["spec"].update(batch={"maxBytes": -1}),
        "spec.batch.maxBytes",
        "must be greater than 0",
    ),
    (
        "unknown field",
        lambda m: _kafka(m).update(topik="x"),
        "spec.sinks[0].kafka.topik",
        "unknown field 'topik' (did you mean 'topic'?); allowed fields: bootstrapServers, topic, key,",
    ),
    (
        "unknown metadata field",
        lambda m: m["metadata"].update(namespce="x"),
        "metadata.namespce",
        "unknown field 'namespce' (did you mean 'namespace'?)",
    ),
    (
        "bad duration",
        lambda m: m["spec"].update(batch={"maxDelay": "5 parsecs"}),
        "spec.batch.maxDelay",
        "'5 parsecs' is not a duration; use e.g. 50ms, 10s, 5m",
    ),
    (
        "zero delay",
        lambda m: m["spec"].update(batch={"maxDelay": "0s"}),
        "spec.batch.maxDelay",
        "must be greater than 0",
    ),
    (
        "bad template placeholder",
        lambda m: _kafka(m).update(topic="shop.${source.tabel}"),
        "spec.sinks[0].kafka.topic",
        "unknown placeholder '${source.tabel}'; allowed placeholders: ${source.db}, ${source.schema}, "
        "${source.table}, ${pipeline}, ${tenant}",
    ),
    (
        "unclosed placeholder",
        lambda m: m["spec"]["sinks"].append(
            {"name": "r", "redis": {"url": "redis://r", "stream": "a${tenant"}}
        ),
        "spec.sinks[1].redis.stream",
        "unclosed '${'",
    ),
    (
        "topic characters",
        lambda m: _kafka(m).update(topic="shop/${source.table}"),
        "spec.sinks[0].kafka.topic",
        "has characters a Kafka topic cannot contain",
    ),
    (
        "two kinds in one sink",
        lambda m: m["spec"]["sinks"][0].update(redis={"url": "redis://r"}),
        "spec.sinks[0]",
        "set exactly one of kafka, redis, stdout; found kafka and redis",
    ),
    (
        "bad envelope",
        lambda m: _kafka(m).update(envelope="avro"),
        "spec.sinks[0].kafka.envelope",
        "must be 'native', 'debezium' or 'cloudevents'; got 'avro'",
    ),
    (
        "bad state",
        lambda m: m["spec"].update(state="sleeping"),
        "spec.state",
        "must be 'running', 'paused' or 'stopped'; got 'sleeping'",
    ),
    (
        "wrong apiVersion",
        lambda m: m.update(apiVersion="deltaforge.io/v1"),
        "apiVersion",
        "must be 'deltaforge.io/v1alpha1'; got 'deltaforge.io/v1'",
    ),
    ("wrong kind", lambda m: m.update(kind="Deployment"), "kind", "must be 'Pipeline'"),
    (
        "wrong type: port",
        lambda m: _postgres(m).update(port="fast"),
        "spec.source.postgres.port",
        "must be an integer",
    ),
    ("wrong type: sinks", lambda m: m["spec"].update(sinks={"name": "x"}), "spec.sinks", "must be a list"),
    (
        "port out of range",
        lambda m: _postgres(m).update(port=70000),
        "spec.source.postgres.port",
        "must be at most 65535",
    ),
    (
        "bad pipeline name",
        lambda m: m["metadata"].update(name="Orders_CDC"),
        "metadata.name",
        "'Orders_CDC' is not a valid name",
    ),
    (
        "missing pipeline name",
        lambda m: m["metadata"].pop("name"),
        "metadata.name",
        "required field is missing",
    ),
    (
        "bad sink name",
        lambda m: m["spec"]["sinks"][0].update(name="-events"),
        "spec.sinks[0].name",
        "is not a valid name",
    ),
    (
        "bad bootstrap server",
        lambda m: _kafka(m).update(bootstrapServers=["kafka:9092", "kafka"]),
        "spec.sinks[0].kafka.bootstrapServers[1]",
        "'kafka' is not host:port",
    ),
    (
        "filter without condition",
        lambda m: m["spec"].update(processors=[{"filter": {}}]),
        "spec.processors[0].filter",
        "set ops, tables or both",
    ),
    (
        "filter with unknown op",
        lambda m: m["spec"].update(processors=[{"filter": {"ops": ["c", "x"]}}]),
        "spec.processors[0].filter.ops[1]",
        "must be 'c', 'u', 'd', 'r' or 't'; got 'x'",
    ),
    (
        "select with include and exclude",
        lambda m: m["spec"].update(processors=[{"select": {"include": ["a"], "exclude": ["b"]}}]),
        "spec.processors[0].select",
        "set exactly one of include or exclude",
    ),
    (
        "processor with two kinds",
        lambda m: m["spec"].update(processors=[{"filter": {"ops": ["c"]}, "mask": {"columns": ["a"]}}]),
        "spec.processors[0]",
        "set exactly one of filter, select, mask; found filter and mask",
    ),
    (
        "salt with redact",
        lambda m: m["spec"].update(
            processors=[{"mask": {"columns": ["a"], "method": "redact", "salt": "s"}}]
        ),
        "spec.processors[0].mask",
        "salt applies only to method hash",
    ),
    (
        "secretKeyRef without key",
        lambda m: _postgres(m).update(user={"secretKeyRef": {"name": "pg"}}),
        "spec.source.postgres.user.secretKeyRef.key",
        "required field is missing",
    ),
    (
        "empty credential mapping",
        lambda m: _postgres(m).update(user={}),
        "spec.source.postgres.user",
        "set secretKeyRef: {name, key}, or write the value as a string",
    ),
    (
        "malformed environment reference",
        lambda m: _postgres(m).update(password="${PG PASSWORD}"),
        "spec.source.postgres.password",
        "malformed ${...} reference",
    ),
    (
        "no required sink",
        lambda m: m["spec"]["sinks"][0].update(required=False),
        "spec",
        "with commitPolicy 'required' at least one sink needs required: true",
    ),
    (
        "checkpoint with two kinds",
        lambda m: m["spec"].update(checkpoint={"file": {"path": "/x"}, "kubernetes": {}}),
        "spec.checkpoint",
        "set exactly one of file, kubernetes; found file and kubernetes",
    ),
    (
        "mysql server id out of range",
        lambda m: m["spec"].update(
            source={"mysql": {"host": "db", "user": "u", "tables": ["shop.*"], "serverId": 0}}
        ),
        "spec.source.mysql.serverId",
        "must be at least 1",
    ),
    (
        "idempotent Redis with a MySQL source",
        lambda m: m["spec"].update(
            source={"mysql": {"host": "db", "user": "u", "tables": ["shop.*"]}},
            sinks=[{"name": "cache", "redis": {"url": "redis://r:6379", "idempotent": True}}],
        ),
        "spec",
        "sinks[0].redis.idempotent needs a postgres source",
    ),
    (
        "two exactly-once sinks",
        lambda m: m["spec"].update(
            sinks=[
                {"name": "a", "kafka": {"bootstrapServers": "k:9092", "exactlyOnce": True}},
                {"name": "b", "kafka": {"bootstrapServers": "k:9092", "exactlyOnce": True}},
            ]
        ),
        "spec",
        "sinks[0] and sinks[1] both set kafka.exactlyOnce",
    ),
    (
        "exactly-once beside another required sink",
        lambda m: (
            _kafka(m).update(exactlyOnce=True),
            m["spec"]["sinks"].append({"name": "cache", "stdout": {}}),
        ),
        "spec",
        "sinks[1] (cache) must be required: false, because sinks[0] sets kafka.exactlyOnce",
    ),
    (
        "exactly-once with commitPolicy all",
        lambda m: (_kafka(m).update(exactlyOnce=True), m["spec"].update(commitPolicy="all")),
        "spec",
        "commitPolicy 'all' cannot be used with sinks[0].kafka.exactlyOnce",
    ),
    (
        "exactly-once with a checkpoint store",
        lambda m: (
            _kafka(m).update(exactlyOnce=True),
            m["spec"].update(checkpoint={"file": {"path": "/var/lib/df.json"}}),
        ),
        "spec",
        "remove spec.checkpoint: with sinks[0].kafka.exactlyOnce the position is stored in Kafka",
    ),
    (
        "exactly-once checkpoint topic with a bad character",
        lambda m: _kafka(m).update(exactlyOnce=True, checkpointTopic="offsets/df"),
        "spec.sinks[0].kafka.checkpointTopic",
        "has characters a Kafka topic cannot contain",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_manifest_names_the_field(mutate: Mutation, path: str, message: str) -> None:
    data = copy.deepcopy(MINIMAL)
    mutate(data)

    with pytest.raises(SpecError) as caught:
        load_manifest(orjson.dumps(data).decode())

    assert any(issue.path == path and message in issue.message for issue in caught.value.issues), str(
        caught.value
    )
    assert f"{path}: " in str(caught.value) or path == ""
    assert "hunter2-literal" not in str(caught.value)


def test_every_issue_is_reported_at_once() -> None:
    data = copy.deepcopy(MINIMAL)
    data["spec"]["state"] = "sleeping"
    data["spec"]["batch"] = {"maxDelay": "soon"}
    _kafka(data)["envelope"] = "avro"

    with pytest.raises(SpecError) as caught:
        parse_pipeline(data)

    assert [issue.path for issue in caught.value.issues] == [
        "spec.state",
        "spec.sinks[0].kafka.envelope",
        "spec.batch.maxDelay",
    ]
    assert str(caught.value).splitlines() == caught.value.lines()
    assert len(caught.value.lines()) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: deltaforge.io/v1alpha1\nkind: [Pipeline\nspec: {}\n",
            "invalid YAML at line 3, column 5",
        ),
        ("kind: Pipeline\nspec:\n  a: 1\n   b: 2\n", "invalid YAML at line 4, column 5"),
        (
            "kind: Pipeline\nkind: Pipeline\n",
            "invalid YAML at line 2, column 1: duplicate key 'kind' (first on line 1)",
        ),
        ('{"kind": "Pipeline",\n "spec": }', "invalid JSON at line 2, column 10"),
        (
            "- apiVersion: deltaforge.io/v1alpha1\n",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec; got a list",
        ),
        (
            "just text",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec; got a plain string",
        ),
        ("# only a comment\n", "the manifest is empty"),
    ],
)
def test_malformed_documents_are_one_clear_issue(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_manifest(text, source_name="pipeline.yaml")

    assert len(caught.value.issues) == 1
    assert caught.value.issues[0].path == ""
    assert caught.value.issues[0].message.startswith(message), caught.value.issues[0].message
    assert caught.value.source == "pipeline.yaml"


def test_pipeline_validates_without_the_loader() -> None:
    pipeline = Pipeline.model_validate(MINIMAL)

    assert pipeline.spec.tenant == "shop"


def test_exactly_once_beside_best_effort_sinks_is_valid() -> None:
    data = copy.deepcopy(MINIMAL)
    _kafka(data).update(exactlyOnce=True)
    data["spec"]["sinks"].append({"name": "cache", "required": False, "stdout": {}})
    pipeline = load_manifest(orjson.dumps(data).decode())
    kafka = pipeline.spec.sinks[0].kafka
    assert kafka is not None
    assert kafka.exactly_once
    assert (kafka.transactional_id, kafka.checkpoint_topic) == (None, "deltaforge.checkpoints")
