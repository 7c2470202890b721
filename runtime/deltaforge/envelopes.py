"""How a ChangeEvent is written: `native`, `debezium` (payload of Debezium's JSON without schemas)
and `cloudevents` (CloudEvents 1.0, structured JSON). All serialized with orjson.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson

from deltaforge import __version__
from deltaforge.events import UNCHANGED, ChangeEvent, Op, Row, SourceInfo

T = TypeVar("T")
V = TypeVar("V", bound=Hashable)

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


def exact(data: bytes) -> bytes:
    """`data` in an object of its own size.

    orjson 3.12 and later return their working buffer untrimmed: every result occupies at least
    4 KiB, a larger one the power of two above it. A sink holds a whole batch of encoded events
    until it is written (5,000 keys and values of 300 bytes each: 40 MB instead of 3 MB), so
    every result that is kept is copied (`b"".join` with an empty second part always copies). The
    copy is cheaper than what it saves: encoding 5,000 small events and holding them took
    3.6-4.9 µs per event untrimmed, mostly page faults on fresh memory, and 0.85-0.95 µs copied."""
    return b"".join((data, b""))


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


def _per_source(render: Callable[[SourceInfo, V], T]) -> Callable[[SourceInfo, V], T]:
    """`render` remembered for the last (SourceInfo, variant) seen.

    The events of one transaction and table share one SourceInfo object, so an identity check
    replaces rendering (and serializing) the same source block for every event.
    """
    last_info: SourceInfo | None = None
    last_variant: V | None = None
    last_value: T | None = None

    def cached(info: SourceInfo, variant: V) -> T:
        nonlocal last_info, last_variant, last_value
        if info is not last_info or variant != last_variant or last_value is None:
            last_value, last_info, last_variant = render(info, variant), info, variant
        return last_value

    return cached


def native_source(source: SourceInfo) -> dict[str, Any]:
    """The `source` block of the native envelope (dead letters carry the same one)."""
    return {
        "connector": source.connector,
        "name": source.name,
        "db": source.db,
        "schema": source.schema,
        "table": source.table,
        "position": source.position,
        "commitTime": iso_utc(source.commit_ts_us),
        "txId": source.txid,
    }


def _native_source(source: SourceInfo, _: None) -> orjson.Fragment:
    return orjson.Fragment(orjson.dumps(native_source(source)))


def native_encoder() -> Encoder:
    """`native`: our own shape, the event as it is."""
    source_block = _per_source(_native_source)

    def encode(event: ChangeEvent) -> bytes:
        payload = {
            "id": event.event_id,
            "op": event.op,  # a StrEnum: orjson writes its value, without the slow enum property
            "source": source_block(event.source, None),
            "key": event.key,
            "before": event.before,
            "after": event.after,
            "tx": {"index": event.index, "last": event.last_in_tx},
        }
        return exact(orjson.dumps(payload, default=_native_default))

    return encode


def _debezium_source(source: SourceInfo, variant: tuple[bool, int]) -> orjson.Fragment:
    snapshot, lsn = variant
    return orjson.Fragment(
        orjson.dumps(
            {
                "version": f"deltaforge-{__version__}",
                "connector": DEBEZIUM_CONNECTORS.get(source.connector, source.connector),
                "name": source.name,
                "ts_ms": _millis(source.commit_ts_us),
                "snapshot": "true" if snapshot else "false",
                "db": source.db,
                "schema": source.schema,
                "table": source.table,
                "txId": source.txid,
                "lsn": lsn or None,
                "position": source.position,
            }
        )
    )


def debezium_encoder() -> Encoder:
    """`debezium`: the payload of Debezium's JSON converter without schemas."""
    source_block = _per_source(_debezium_source)

    def encode(event: ChangeEvent) -> bytes:
        source = event.source
        commit_ms = _millis(source.commit_ts_us)
        payload = {
            "before": event.before,
            "after": event.after,
            "source": source_block(source, (event.op is Op.READ, event.lsn)),
            "op": event.op,
            # Debezium sets processing time here; the commit time keeps replays byte-identical.
            "ts_ms": commit_ms,
            "transaction": {
                "id": f"{source.txid}:{source.position}",
                "total_order": event.index + 1,
                "data_collection_order": event.index + 1,
            },
        }
        return exact(orjson.dumps(payload, default=_debezium_default))

    return encode


def cloudevents_encoder(pipeline: str) -> Encoder:
    """`cloudevents`: CloudEvents 1.0 structured mode; `pipeline` names the event source."""

    def attributes(source: SourceInfo, _: None) -> tuple[str, str, str | None]:
        return (
            f"/deltaforge/{pipeline}/{source.connector}/{source.db}",
            f"{source.schema}.{source.table}",
            iso_utc(source.commit_ts_us),
        )

    attributes_of = _per_source(attributes)

    def encode(event: ChangeEvent) -> bytes:
        uri, subject, time = attributes_of(event.source, None)
        document = {
            "specversion": "1.0",
            "id": event.event_id,
            "source": uri,
            "type": CLOUDEVENT_TYPES[event.op],
            "subject": subject,
            "time": time,
            "datacontenttype": "application/json",
            # CloudEvents extension attributes: lower-case letters and digits only.
            "deltaforgeposition": event.source.position,
            "deltaforgeindex": event.index,
            "data": {"op": event.op, "key": event.key, "before": event.before, "after": event.after},
        }
        return exact(orjson.dumps(document, default=_native_default))

    return encode


Encoder = Callable[[ChangeEvent], bytes]
CONTENT_TYPES: Final = {
    "native": "application/json",
    "debezium": "application/json",
    "cloudevents": "application/cloudevents+json",
}


def encoder_for(envelope: str, pipeline: str) -> Encoder:
    """A serializer of one envelope, for one sink (it remembers the last source block it built)."""
    if envelope == "native":
        return native_encoder()
    if envelope == "debezium":
        return debezium_encoder()
    if envelope == "cloudevents":
        return cloudevents_encoder(pipeline)
    raise ValueError(f"unknown envelope {envelope!r}: use native, debezium or cloudevents")


def encode_key(key: Row | None) -> bytes | None:
    """The default Kafka key: the row's primary key as JSON with sorted names, so one row keeps
    one partition whatever the column order."""
    if key is None:
        return None
    if len(key) == 1:  # nothing to sort
        return exact(orjson.dumps(key, default=_native_default))
    return exact(orjson.dumps(key, default=_native_default, option=orjson.OPT_SORT_KEYS))
