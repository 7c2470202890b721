"""The Pipeline spec: a full manifest loads with its defaults, and every mistake is named by path."""

from __future__ import annotations

import copy
from pathlib import Path

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
from tests.unit.spec_samples import FULL_MANIFEST, MINIMAL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
