"""How a ChangeEvent is written: `native`, `debezium` (payload of Debezium's JSON without schemas)
and `cloudevents` (CloudEvents 1.0, structured JSON). All serialized with orjson.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from deltaforge import __version__
from deltaforge.events import UNCHANGED, ChangeEvent, Op, Row

# An unchanged TOAST value is written as an explicit marker, never as a fake null.
UNCHANGED_MARKER: Final = {"__unchanged__": True}
# Debezium's own placeholder for the same case (its `unavailable.value.placeholder` default).
DEBEZIUM_UNAVAILABLE: Final = "__debezium_unavailable_value"
DEBEZIUM_CONNECTORS: Final = {"postgres": "postgresql", "mysql": "mysql"}
CLOUDEVENT_TYPES: Final = {
    Op.CREATE: "io.deltaforge.row.created",
    Op.UPDATE: "io.deltaforge.row.updated",
    Op.DELETE: "io.deltaforge.row.deleted",
    Op.READ: "io.deltaforge.row.read",
    Op.TRUNCATE: "io.deltaforge.table.truncated",
}


def _native_default(value: object) -> object:
    if value is UNCHANGED:
        return UNCHANGED_MARKER
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _debezium_default(value: object) -> object:
    if value is UNCHANGED:
        return DEBEZIUM_UNAVAILABLE
    raise TypeError(f"cannot serialize {type(value).__name__}")


@functools.lru_cache(maxsize=256)
def iso_utc(microseconds: int | None) -> str | None:
    """Cached: every event of a transaction carries the same commit time."""
    if microseconds is None:
        return None
    moment = datetime.fromtimestamp(microseconds / 1_000_000, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _millis(microseconds: int | None) -> int | None:
    return None if microseconds is None else microseconds // 1000


def native_payload(event: ChangeEvent) -> dict[str, Any]:
    source = event.source
    return {
        "id": event.event_id,
        "op": event.op.value,
        "source": {
            "connector": source.connector,
            "name": source.name,
            "db": source.db,
            "schema": source.schema,
            "table": source.table,
            "position": source.position,
            "commitTime": iso_utc(source.commit_ts_us),
            "txId": source.txid,
        },
        "key": event.key,
        "before": event.before,
        "after": event.after,
        "tx": {"index": event.index, "last": event.last_in_tx},
    }


def encode_native(event: ChangeEvent) -> bytes:
    return orjson.dumps(native_payload(event), default=_native_default)


def encode_debezium(event: ChangeEvent) -> bytes:
    source = event.source
    commit_ms = _millis(source.commit_ts_us)
    payload = {
        "before": event.before,
        "after": event.after,
        "source": {
            "version": f"deltaforge-{__version__}",
            "connector": DEBEZIUM_CONNECTORS.get(source.connector, source.connector),
            "name": source.name,
            "ts_ms": commit_ms,
            "snapshot": "true" if event.op is Op.READ else "false",
            "db": source.db,
            "schema": source.schema,
            "table": source.table,
            "txId": source.txid,
            "lsn": event.lsn or None,
            "position": source.position,
        },
        "op": event.op.value,
        # Debezium sets processing time here; the commit time keeps replays byte-identical.
        "ts_ms": commit_ms,
        "transaction": {
            "id": f"{source.txid}:{source.position}",
            "total_order": event.index + 1,
            "data_collection_order": event.index + 1,
        },
    }
    return orjson.dumps(payload, default=_debezium_default)


def encode_cloudevents(event: ChangeEvent, pipeline: str) -> bytes:
    source = event.source
    document = {
        "specversion": "1.0",
        "id": event.event_id,
        "source": f"/deltaforge/{pipeline}/{source.connector}/{source.db}",
        "type": CLOUDEVENT_TYPES[event.op],
        "subject": event.table_path,
        "time": iso_utc(source.commit_ts_us),
        "datacontenttype": "application/json",
        # CloudEvents extension attributes: lower-case letters and digits only.
        "deltaforgeposition": source.position,
        "deltaforgeindex": event.index,
        "data": {"op": event.op.value, "key": event.key, "before": event.before, "after": event.after},
    }
    return orjson.dumps(document, default=_native_default)


Encoder = Callable[[ChangeEvent], bytes]
CONTENT_TYPES: Final = {
    "native": "application/json",
    "debezium": "application/json",
    "cloudevents": "application/cloudevents+json",
}


def encoder_for(envelope: str, pipeline: str) -> Encoder:
    """The serializer of one envelope; `pipeline` names the CloudEvents source."""
    if envelope == "native":
        return encode_native
    if envelope == "debezium":
        return encode_debezium
    if envelope == "cloudevents":
        return lambda event: encode_cloudevents(event, pipeline)
    raise ValueError(f"unknown envelope {envelope!r}: use native, debezium or cloudevents")


def encode_key(key: Row | None) -> bytes | None:
    """The default Kafka key: the row's primary key as JSON, so one row keeps one partition."""
    if key is None:
        return None
    return orjson.dumps(key, default=_native_default, option=orjson.OPT_SORT_KEYS)
