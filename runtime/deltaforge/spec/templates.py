"""Name templates for topics, keys and streams: `shop.${source.table}`.

Only a fixed set of placeholders exists, checked when the manifest loads, so a typo such as
`${source.tabel}` fails at `deltaforge validate` instead of producing a topic named after it.
A `Template` is compiled once per sink; rendering is a single `str.format` call per event.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

PLACEHOLDERS = ("source.db", "source.schema", "source.table", "pipeline", "tenant")
_PER_EVENT = {"source.db": "{0}", "source.schema": "{1}", "source.table": "{2}"}
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_ALLOWED = ", ".join(f"${{{name}}}" for name in PLACEHOLDERS)


def check_template(text: str) -> str:
    """Return `text` unchanged if every `${...}` in it is a known placeholder."""
    for match in _REFERENCE.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {match.group(0)!r}; allowed placeholders: {_ALLOWED}")
    if "${" in literal_text(text):
        raise ValueError(f"unclosed '${{' in {text!r}; placeholders look like ${{source.table}}")
    return text


def literal_text(text: str) -> str:
    """The template with its placeholders removed: the characters every rendering contains."""
    return _REFERENCE.sub("", text)


TemplateStr = Annotated[str, Field(min_length=1), AfterValidator(check_template)]
"""A string that may contain ${source.db}, ${source.schema}, ${source.table}, ${pipeline}, ${tenant}."""


class Template:
    """A validated template with `${pipeline}` and `${tenant}` already substituted."""

    __slots__ = ("_format", "text")

    def __init__(self, text: str, *, pipeline: str, tenant: str) -> None:
        check_template(text)
        fixed = {"pipeline": pipeline, "tenant": tenant}
        parts: list[str] = []
        position = 0
        for match in _REFERENCE.finditer(text):
            parts.append(_escape(text[position : match.start()]))
            name = match.group(1)
            parts.append(_PER_EVENT.get(name) or _escape(fixed[name]))
            position = match.end()
        parts.append(_escape(text[position:]))
        self.text = text
        self._format = "".join(parts)

    def render(self, db: str, schema: str, table: str) -> str:
        """The name for a change to `db`.`schema`.`table` (MySQL passes the database as both)."""
        return self._format.format(db, schema, table)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
