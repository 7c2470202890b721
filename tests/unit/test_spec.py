"""The Pipeline spec: a full manifest loads with its defaults, and every mistake is named by path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from deltaforge.spec import (
    CommitPolicy,
    Compression,
    Envelope,
    KafkaSinkSpec,
    MaskMethod,
    Pipeline,
    ReclaimPolicy,
    RedisSinkSpec,
    SpecError,
    SslMode,
    State,
    StdoutSinkSpec,
    load_manifest,
    load_manifest_file,
    parse_pipeline,
    validate_manifest_file,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FULL_MANIFEST = """
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata:
  name: orders-cdc
  namespace: shop
  labels: {team: payments}
  uid: 6f1c2f7e-1111-4a8e-9d0e-5d2b9c0f0a11
  resourceVersion: "81234"
  generation: 3
  creationTimestamp: 2024-05-01T10:00:00Z
  managedFields: [{manager: kubectl, operation: Apply}]
spec:
  source:
    postgres:
      host: pg.shop.svc
      database: shop
      user: {secretKeyRef: {name: pg-cdc, key: username}}
      password: s3cret-Literal-pw
      sslMode: require
      tables: ["public.orders", "public.order_*", "inventory.*"]
      slot: {reclaimPolicy: Delete}
      heartbeat: {interval: 0s}
  processors:
    - filter: {ops: [c, u, d], tables: ["public.orders"]}
    - select: {tables: ["public.orders"], exclude: [internal_note]}
    - mask: {columns: [email], salt: "${MASK_SALT}"}
  sinks:
    - name: events
      kafka:
        bootstrapServers: kafka-0:9092, kafka-1:9092
        topic: "shop.${source.table}"
        envelope: debezium
        compression: zstd
        maxRequestSize: 2Mi
    - name: cache
      required: false
      redis: {url: "redis://:${REDIS_PASSWORD}@redis:6379/0", stream: "cdc:${source.table}", maxLen: 100000}
    - name: console
      stdout: {pretty: true}
  checkpoint:
    kubernetes: {}
"""

MINIMAL: dict[str, Any] = {
    "apiVersion": "deltaforge.io/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "orders-cdc", "namespace": "shop"},
    "spec": {
        "source": {
            "postgres": {
                "host": "pg",
                "database": "shop",
                "user": "deltaforge",
                "password": "hunter2-literal",
                "tables": ["public.orders"],
            }
        },
        "sinks": [{"name": "events", "kafka": {"bootstrapServers": "kafka:9092"}}],
    },
}


def test_full_manifest_loads_with_defaults_applied() -> None:
    pipeline = load_manifest(FULL_MANIFEST)

    assert (pipeline.name, pipeline.namespace, pipeline.tenant) == ("orders-cdc", "shop", "shop")
    assert pipeline.metadata.labels == {"team": "payments"}
    spec = pipeline.spec
    assert spec.tenant == "shop"
    assert spec.state is State.RUNNING
    assert spec.commit_policy is CommitPolicy.REQUIRED
    assert (spec.batch.max_events, spec.batch.max_bytes, spec.batch.max_delay) == (2000, 4 * 2**20, 0.05)

    postgres = spec.source.postgres
    assert postgres is not None
    assert spec.source.kind == "postgres"
    assert spec.source.config is postgres
    assert (postgres.port, postgres.ssl_mode, postgres.connect_timeout) == (5432, SslMode.REQUIRE, 10.0)
    assert postgres.slot.name == "df_shop__orders_cdc"
    assert postgres.slot.reclaim_policy is ReclaimPolicy.DELETE
    assert postgres.slot.create is True
    assert (postgres.publication.name, postgres.publication.create) == ("df_shop__orders_cdc", False)
    assert postgres.heartbeat.interval == 0.0
    assert postgres.user.secret_key_ref is not None
    assert (postgres.user.secret_key_ref.name, postgres.user.secret_key_ref.key) == ("pg-cdc", "username")

    assert [processor.kind for processor in spec.processors] == ["filter", "select", "mask"]
    mask = spec.processors[2].mask
    assert mask is not None
    assert mask.method is MaskMethod.HASH

    kafka, redis, console = (sink.config for sink in spec.sinks)
    assert isinstance(kafka, KafkaSinkSpec)
    assert kafka.bootstrap_servers == ["kafka-0:9092", "kafka-1:9092"]
    assert (kafka.envelope, kafka.compression, kafka.max_request_size) == (
        Envelope.DEBEZIUM,
        Compression.ZSTD,
        2 * 2**20,
    )
    assert (kafka.key, kafka.exactly_once, kafka.linger_ms) == (None, False, 5)
    assert isinstance(redis, RedisSinkSpec)
    assert (redis.stream, redis.max_len, redis.envelope) == ("cdc:${source.table}", 100000, Envelope.NATIVE)
    assert isinstance(console, StdoutSinkSpec)
    assert console.pretty is True
    assert [sink.required for sink in spec.sinks] == [True, False, True]

    assert spec.checkpoint is not None
    assert spec.checkpoint.kubernetes is not None
    assert spec.checkpoint.kubernetes.config_map == "orders-cdc-checkpoint"


def test_manifest_round_trips_through_its_dump() -> None:
    pipeline = load_manifest(FULL_MANIFEST)
    manifest = pipeline.to_manifest(reveal_credentials=True)

    assert manifest["spec"]["batch"] == {"maxEvents": 2000, "maxBytes": 4194304, "maxDelay": "50ms"}
    assert manifest["spec"]["source"]["postgres"]["slot"]["name"] == "df_shop__orders_cdc"
    assert "uid" not in manifest["metadata"]
    assert parse_pipeline(manifest) == pipeline
    assert load_manifest(orjson.dumps(manifest).decode()) == pipeline
    assert Pipeline.model_validate(pipeline.model_dump()) == pipeline


def test_yaml_flow_mapping_is_not_mistaken_for_json() -> None:
    pipeline = load_manifest(
        "{apiVersion: deltaforge.io/v1alpha1, kind: Pipeline, metadata: {name: p}, "
        "spec: {source: {mysql: {host: db, user: cdc, tables: [shop.orders]}}, sinks: [{name: s, stdout: {}}]}}"
    )

    assert pipeline.spec.source.kind == "mysql"
    assert pipeline.spec.source.mysql is not None
    assert (pipeline.spec.source.mysql.port, pipeline.spec.source.mysql.server_id) == (3306, None)


def test_dump_masks_literal_credentials_unless_asked() -> None:
    manifest = load_manifest(FULL_MANIFEST).to_manifest()

    assert manifest["spec"]["source"]["postgres"]["password"] == "**********"
    assert manifest["spec"]["source"]["postgres"]["user"] == {
        "secretKeyRef": {"name": "pg-cdc", "key": "username"}
    }
    assert "s3cret-Literal-pw" not in orjson.dumps(manifest).decode()


def test_literal_password_never_appears_in_repr_or_str() -> None:
    pipeline = load_manifest(FULL_MANIFEST)

    assert "s3cret-Literal-pw" not in repr(pipeline)
    assert "s3cret-Literal-pw" not in str(pipeline)
    assert "s3cret-Literal-pw" not in repr(pipeline.spec.source.postgres)


def test_literal_password_never_appears_in_errors() -> None:
    text = (
        FULL_MANIFEST.replace("sslMode: require", "sslMode: nope")
        .replace("host: pg.shop.svc", "host: pg.shop.svc\n      bogus: s3cret-Literal-pw\n      port: x")
        .replace("password: s3cret-Literal-pw", "password: s3cret-Literal-pw${")
    )
    with pytest.raises(SpecError) as caught:
        load_manifest(text)

    assert {issue.path for issue in caught.value.issues} == {
        "spec.source.postgres.bogus",
        "spec.source.postgres.port",
        "spec.source.postgres.password",
        "spec.source.postgres.sslMode",
    }
    assert "s3cret-Literal-pw" not in str(caught.value)
    assert "s3cret-Literal-pw" not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_credential_of_the_wrong_type_is_not_echoed() -> None:
    data = copy.deepcopy(MINIMAL)
    data["spec"]["source"]["postgres"]["password"] = 987654321
    with pytest.raises(SpecError) as caught:
        parse_pipeline(data)

    assert caught.value.issues[0].path == "spec.source.postgres.password"
    assert "must be a string" in caught.value.issues[0].message
    assert "987654321" not in str(caught.value)


def test_server_set_metadata_and_status_are_ignored() -> None:
    data = copy.deepcopy(MINIMAL)
    data["metadata"].update(uid="abc", resourceVersion="7", generation=2, finalizers=["x"])
    data["status"] = {"phase": "Running"}

    pipeline = parse_pipeline(data)

    assert pipeline.metadata.name == "orders-cdc"
    assert "status" not in pipeline.to_manifest()


def test_namespace_and_tenant_defaults() -> None:
    data = copy.deepcopy(MINIMAL)
    del data["metadata"]["namespace"]
    data["spec"]["tenant"] = "acme"

    pipeline = parse_pipeline(data)

    assert (pipeline.namespace, pipeline.tenant, pipeline.spec.tenant) == ("default", "acme", "acme")


def test_long_names_give_a_bounded_slot_name() -> None:
    data = copy.deepcopy(MINIMAL)
    data["metadata"] = {"name": "o" * 63, "namespace": "n" * 63}

    postgres = parse_pipeline(data).spec.source.postgres

    assert postgres is not None
    assert postgres.slot.name is not None
    assert len(postgres.slot.name) == 63
    assert postgres.slot.name.startswith("df_nnn")


def test_example_manifest_loads() -> None:
    pipeline = load_manifest_file(EXAMPLES / "postgres-to-kafka.yaml")

    postgres = pipeline.spec.source.postgres
    assert postgres is not None
    assert (postgres.host, postgres.port, postgres.database) == ("127.0.0.1", 25432, "shop")
    assert postgres.tables == ["public.orders", "public.order_items"]
    assert postgres.password is not None
    assert postgres.password.literal is not None
    assert postgres.password.literal.get_secret_value() == "${PG_PASSWORD}"
    events, cache = pipeline.spec.sinks
    assert events.kafka is not None
    assert (events.kafka.topic, events.kafka.envelope) == ("shop.${source.table}", Envelope.DEBEZIUM)
    assert cache.redis is not None
    assert cache.required is False
    assert pipeline.spec.checkpoint is not None
    assert pipeline.spec.checkpoint.file is not None
    assert pipeline.spec.checkpoint.file.path == "./.deltaforge/orders-cdc.json"


def test_validate_manifest_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(FULL_MANIFEST.replace("maxRequestSize: 2Mi", "maxRequestSize: lots"))

    assert validate_manifest_file(EXAMPLES / "postgres-to-kafka.yaml") == []
    assert validate_manifest_file(broken) == [
        f"{broken}: spec.sinks[0].kafka.maxRequestSize: 'lots' is not a quantity; "
        "use e.g. 512Ki, 4Mi, 1Gi or a number of bytes"
    ]
    assert validate_manifest_file(tmp_path / "missing.yaml") == [
        f"{tmp_path / 'missing.yaml'}: cannot read the file: No such file or directory"
    ]


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
