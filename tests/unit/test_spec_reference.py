"""docs/pipeline-reference.md is generated from the spec model and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from deltaforge.spec.reference import render_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "pipeline-reference.md"


def test_committed_reference_matches_the_spec_model() -> None:
    assert REFERENCE.read_text() == render_reference(), (
        "docs/pipeline-reference.md is stale: regenerate it with "
        "`.venv/bin/python -m deltaforge.spec.reference > docs/pipeline-reference.md`"
    )


def test_reference_lists_every_top_level_field() -> None:
    text = render_reference()
    for field in (
        "state",
        "source.postgres.slot.reclaimPolicy",
        "sinks[].kafka.topic",
        "batch.maxDelay",
        "commitPolicy",
    ):
        assert f"| `{field}` |" in text
