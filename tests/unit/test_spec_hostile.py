"""Hostile manifests: huge, deeply nested, alias bombs, odd unicode. Each is refused quickly with
one clear message, never a traceback, a hang or a message as large as the input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deltaforge.spec import SpecError, load_manifest, validate_manifest_file
from deltaforge.spec.loading import MAX_MANIFEST_BYTES


def _refused(text: str) -> SpecError:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_manifest(text)
    assert time.monotonic() - started < 30, "refusing a manifest must not take long"
    assert all(len(line) <= 1000 for line in caught.value.lines()), caught.value.lines()
    return caught.value


def _alias_bomb(levels: int = 9, fan_out: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan_out) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * fan_out) + "]" for n in range(1, levels)]
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    assert "YAML aliases" in str(_refused(_alias_bomb()))


def test_a_few_aliases_still_work() -> None:
    text = """
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata: {name: orders-cdc, namespace: shop}
spec:
  source: {postgres: {host: pg, database: shop, user: u, tables: [public.orders]}}
  sinks:
    - {name: a, kafka: &kafka {bootstrapServers: "kafka:9092", topic: "shop.orders"}}
    - {name: b, required: false, kafka: *kafka}
"""
    assert load_manifest(text).spec.sinks[1].kafka is not None


@pytest.mark.parametrize("text", ["[" * 20_000 + "]" * 20_000, '{"a":' * 20_000 + "1" + "}" * 20_000])
def test_deep_nesting_is_one_message(text: str) -> None:
    message = str(_refused(text))
    assert "nested too deeply" in message or "depth limit exceeded" in message


def test_a_manifest_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    assert "at most" in str(_refused("# " + "x" * MAX_MANIFEST_BYTES))
    path = tmp_path / "huge.yaml"
    path.write_text("x" * (4 * MAX_MANIFEST_BYTES + 1))
    (line,) = validate_manifest_file(path)
    assert "the file is" in line


def test_long_values_are_shortened_in_messages() -> None:
    name = "x" * 500_000
    error = _refused(
        f"apiVersion: deltaforge.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{}}"
    )
    naming = next(issue for issue in error.issues if issue.path == "metadata.name")
    assert "(shortened)" in naming.message
    assert len(naming.message) < 400


def test_unicode_names_get_the_rule_not_a_crash() -> None:
    error = _refused(
        'apiVersion: deltaforge.io/v1alpha1\nkind: Pipeline\nmetadata: {name: "ordërs-😀", namespace: shop}\n'
        'spec: {source: {postgres: {host: pg, database: shop, user: u, tables: ["public.örders"]}}, '
        "sinks: [{name: e, stdout: {}}]}"
    )
    assert {issue.path for issue in error.issues} == {"metadata.name", "spec.source.postgres.tables[0]"}


def test_a_template_naming_a_missing_field_is_refused() -> None:
    error = _refused(
        "apiVersion: deltaforge.io/v1alpha1\nkind: Pipeline\nmetadata: {name: orders-cdc, namespace: shop}\n"
        "spec: {source: {postgres: {host: pg, database: shop, user: u, tables: [public.orders]}},"
        ' sinks: [{name: e, kafka: {bootstrapServers: "k:9092", topic: "shop.${source.nope}"}}]}'
    )
    (issue,) = error.issues
    assert issue.path == "spec.sinks[0].kafka.topic"
    assert "unknown placeholder '${source.nope}'" in issue.message
