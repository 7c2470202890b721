"""Dead letters: an event a sink cannot write is replaced by a small record saying why.

A row that cannot be serialized (a JSON number beyond 64 bits, say) or that is larger than the
destination accepts would otherwise fail its batch on every retry and stop the pipeline for good.
Instead it goes, as a dead letter, to the sink's dead-letter topic or stream; the rest of the
batch is written and the position moves on. The dead letter carries what is needed to find the
row again in the source (table, key, position, index, event id) but not the row itself, which is
what could not be written. Each one is counted in `deltaforge_sink_failures_total{kind}` and
logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from deltaforge.envelopes import exact, native_source
from deltaforge.events import ChangeEvent
from deltaforge.sinks.base import FailureKind


@dataclass(frozen=True)
class DeadLetter:
    event: ChangeEvent
    kind: FailureKind
    reason: str


def _json_safe(value: Any) -> Any:
    """`value` if orjson can write it, else its text: the key of a dead letter must never fail."""
    try:
        orjson.dumps(value)
    except TypeError:
        return repr(value)
    return value


def dead_letter_document(letter: DeadLetter, sink: str) -> bytes:
    event = letter.event
    document = {
        "id": event.event_id,
        "sink": sink,
        "failure": letter.kind.value,
        "reason": letter.reason,
        "op": event.op,
        "source": native_source(event.source),
        "key": _json_safe(event.key),
        "tx": {"index": event.index, "last": event.last_in_tx},
    }
    return exact(orjson.dumps(document))


def summary(letters: list[DeadLetter]) -> dict[str, Any]:
    """Log fields for a batch's dead letters: how many, of which kinds, and the first one."""
    kinds = sorted({letter.kind.value for letter in letters})
    first = letters[0]
    return {
        "count": len(letters),
        "kinds": kinds,
        "first_event_id": first.event.event_id,
        "first_table": first.event.table_path,
        "first_reason": first.reason,
    }
