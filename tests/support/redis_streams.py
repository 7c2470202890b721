"""Reading Redis streams back for the verifier (tests/support/verify.py).

The Redis sink writes one entry per change with the fields `event_id`, `op`, `table`, `position`
and `data` (the envelope). An entry becomes a `Delivered` record: the stream is the topic of a
single partition (a stream is ordered as a partition is), the entry's place in the stream its
offset, `data` the value and the other fields the headers, so `verify_delivery` checks loss,
replays (same id, same bytes), identity and per-key order exactly as for Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from tests.support.faults import Reader, Until
from tests.support.verify import Delivered

_PAGE = 10_000


def _delivered(stream: str, offset: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Delivered:
    return Delivered(
        topic=stream,
        partition=0,
        offset=offset,
        timestamp_ms=int(entry_id.split(b"-")[0]),
        key=None,
        value=fields.get(b"data"),
        headers=tuple(sorted((name.decode(), value) for name, value in fields.items() if name != b"data")),
    )


def read_streams(
    url: str, streams: Sequence[str], *, until: Until | None = None, within: float = 60
) -> tuple[list[Delivered], bool]:
    """Every entry of `streams` from the beginning, as `verify.read_topics` reads topics: without
    `until`, up to the end as it is now; with it, passes over the streams until `until(new
    entries)` is True (each pass reads to the end of that moment). The flag says whether that
    happened within `within` seconds; a missing stream reads as empty."""
    deadline = time.monotonic() + within
    records: list[Delivered] = []
    after = dict.fromkeys(streams, b"-")  # XRANGE start: "-" first, then "(<last id read>"
    offsets = dict.fromkeys(streams, 0)
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        while True:
            fresh: list[Delivered] = []
            for stream in streams:
                while page := client.xrange(stream, min=after[stream], count=_PAGE):
                    fresh.extend(
                        _delivered(stream, offsets[stream] + number, entry_id, fields)
                        for number, (entry_id, fields) in enumerate(page)
                    )
                    offsets[stream] += len(page)
                    after[stream] = b"(" + page[-1][0]
            records.extend(fresh)
            if until is None or until(fresh):
                return records, True
            if time.monotonic() > deadline:
                return records, False
            time.sleep(0.25)


def redis_reader(url: str, streams: Sequence[str]) -> Reader:
    def read(*, until: Until | None = None, within: float = 60) -> tuple[list[Delivered], bool]:
        return read_streams(url, streams, until=until, within=within)

    return read
