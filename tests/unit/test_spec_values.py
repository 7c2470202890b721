"""Spec value types: units, templates, table patterns, credentials and the exported schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deltaforge.spec import (
    Credential,
    CredentialError,
    SpecError,
    TableMatcher,
    Template,
    iter_credentials,
    load_manifest,
    parse_duration,
    parse_quantity,
    resolve,
    spec_json_schema,
)
from deltaforge.spec.pipeline import default_database_object_name
from deltaforge.spec.units import format_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        (" 2s ", 2.0),
        ("0s", 0.0),
        ("3", 3.0),
        ("0.25", 0.25),
        (7, 7.0),
        (0.5, 0.5),
    ],
)
def test_durations_parse_to_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 parsecs", "", "s", "10 s", "-5s", "1d", "1e3", "nan", True, None, [1]])
def test_bad_durations_are_explained(text: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration; use e\.g\. 50ms, 10s, 5m"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.1, 1.5, 10.0, 90.0, 3600.0, 0.00125, 1e-9])
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_durations_format_in_manifest_style() -> None:
    assert [format_duration(value) for value in (0.05, 10.0, 0.0)] == ["50ms", "10s", "0s"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4Mi", 4 * 2**20),
        ("1Gi", 2**30),
        ("512Ki", 512 * 1024),
        ("1M", 1_000_000),
        ("2k", 2000),
        ("1000", 1000),
        ("1.5Ki", 1536),
        (4096, 4096),
    ],
)
def test_quantities_parse_to_bytes(text: str | int, size: int) -> None:
    assert parse_quantity(text) == size


@pytest.mark.parametrize("text", ["4 MB", "4MB", "Mi", "", "-1Mi", "lots", False])
def test_bad_quantities_are_explained(text: object) -> None:
    with pytest.raises(
        ValueError, match=r"is not a quantity; use e\.g\. 512Ki, 4Mi, 1Gi or a number of bytes"
    ):
        parse_quantity(text)


def test_fractional_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match="is not a whole number of bytes"):
        parse_quantity("1.5")


def test_template_renders_every_placeholder() -> None:
    template = Template(
        "${tenant}/${pipeline}:${source.db}.${source.schema}.${source.table}",
        pipeline="orders-cdc",
        tenant="acme",
    )

    assert template.render("shop", "public", "orders") == "acme/orders-cdc:shop.public.orders"
    assert template.render("shop", "inventory", "items") == "acme/orders-cdc:shop.inventory.items"


def test_template_keeps_literal_braces_and_dollars() -> None:
    template = Template("{x}$-${source.table}", pipeline="p", tenant="t")

    assert template.render("d", "s", "orders") == "{x}$-orders"


def test_template_rejects_unknown_placeholders() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder '\$\{source\.tabel\}'"):
        Template("${source.tabel}", pipeline="p", tenant="t")


def test_table_matcher_globs() -> None:
    matcher = TableMatcher(["public.orders", "public.order_*", "inventory.*", "*.audit"])

    assert matcher("public", "orders")
    assert matcher("public", "order_items")
    assert matcher("inventory", "anything")
    assert matcher("billing", "audit")
    assert not matcher("public", "customers")
    assert not matcher("public", "orders_archive")
    assert not matcher("Public", "orders")
    assert not TableMatcher([])("public", "orders")


def test_table_matcher_does_not_match_across_the_dot() -> None:
    assert not TableMatcher(["pub*.orders"])("pub", "x.orders")


def test_default_database_object_names() -> None:
    assert default_database_object_name("shop", "orders-cdc") == "df_shop__orders_cdc"
    assert default_database_object_name("shop-eu", "orders") != default_database_object_name(
        "shop", "eu-orders"
    )
    long_one = default_database_object_name("n" * 63, "a" * 63)
    long_two = default_database_object_name("n" * 63, "b" * 63)
    assert len(long_one) == len(long_two) == 63
    assert long_one != long_two


def _credential(value: Any) -> Credential:
    manifest = f"""
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata: {{name: p}}
spec:
  source: {{postgres: {{host: h, database: d, user: u, tables: [a.b], password: {value}}}}}
  sinks: [{{name: s, stdout: {{}}}}]
"""
    postgres = load_manifest(manifest).spec.source.postgres
    assert postgres is not None
    assert postgres.password is not None
    return postgres.password


def test_literal_credential_expands_environment_variables() -> None:
    credential = _credential('"${PG_USER}:${PG_PASSWORD}!"')

    assert resolve(credential, {"PG_USER": "cdc", "PG_PASSWORD": "pw"}) == "cdc:pw!"
    assert resolve(_credential("plain-text"), {}) == "plain-text"


def test_missing_environment_variable_names_variable_and_field() -> None:
    with pytest.raises(CredentialError) as caught:
        resolve(_credential("'${PG_PASSWORD}'"), {}, field="spec.source.postgres.password")

    assert str(caught.value) == "spec.source.postgres.password: environment variable PG_PASSWORD is not set"
    assert isinstance(caught.value, SpecError)


def test_secret_key_ref_reads_the_mounted_file(tmp_path: Path) -> None:
    (tmp_path / "pg-cdc").mkdir()
    (tmp_path / "pg-cdc" / "password").write_text("from-secret")
    credential = _credential("{secretKeyRef: {name: pg-cdc, key: password}}")

    assert resolve(credential, {}, tmp_path) == "from-secret"
    assert resolve(credential, {"DELTAFORGE_SECRETS_DIR": str(tmp_path)}) == "from-secret"


def test_missing_secret_file_names_secret_key_and_path(tmp_path: Path) -> None:
    credential = _credential("{secretKeyRef: {name: pg-cdc, key: password}}")

    with pytest.raises(CredentialError) as caught:
        resolve(credential, {}, tmp_path, field="spec.source.postgres.password")

    assert str(caught.value) == (
        "spec.source.postgres.password: key 'password' of Secret 'pg-cdc' not found: "
        f"no file {tmp_path / 'pg-cdc' / 'password'} (is the Secret mounted there?)"
    )


def test_secrets_dir_defaults_to_the_operator_mount() -> None:
    credential = _credential("{secretKeyRef: {name: surely-absent-secret, key: password}}")

    with pytest.raises(CredentialError, match="/etc/deltaforge/secrets/surely-absent-secret/password"):
        resolve(credential, {})


def test_credentials_are_listed_with_their_paths() -> None:
    pipeline = load_manifest(
        """
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  source: {postgres: {host: h, database: d, user: u, tables: [a.b], password: {secretKeyRef: {name: pg, key: pw}}}}
  sinks: [{name: s, stdout: {}}, {name: r, redis: {url: "redis://r"}}]
"""
    )

    paths = [path for path, _ in iter_credentials(pipeline)]

    assert paths == ["spec.source.postgres.user", "spec.source.postgres.password", "spec.sinks[1].redis.url"]


def _walk_properties(schema: dict[str, Any], path: str = "spec") -> list[str]:
    """Paths of every property without a description, searching nested objects, arrays and unions."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{path}.{name}")
        missing += _walk_properties(prop, f"{path}.{name}")
    for option in schema.get("anyOf", []):
        missing += _walk_properties(option, path)
    if isinstance(schema.get("items"), dict):
        missing += _walk_properties(schema["items"], f"{path}[]")
    return missing


def test_spec_schema_is_inlined_and_described() -> None:
    schema = spec_json_schema()
    text = repr(schema)

    assert "$ref" not in text
    assert "$defs" not in text
    assert _walk_properties(schema) == []
    assert schema["type"] == "object"
    assert schema["required"] == ["source", "sinks"]
    sink = schema["properties"]["sinks"]["items"]
    assert set(sink["properties"]) == {"name", "required", "kafka", "redis", "stdout"}
    kafka = sink["properties"]["kafka"]["properties"]
    assert kafka["envelope"]["enum"] == ["native", "debezium", "cloudevents"]
    assert kafka["key"]["nullable"] is True
    assert "maxRequestSize" in kafka
    batch = schema["properties"]["batch"]["properties"]
    assert batch["maxDelay"]["x-kubernetes-int-or-string"] is True
    assert batch["maxDelay"]["default"] == "50ms"
