"""The pgoutput decoder and value conversion against what a real PostgreSQL 15 walsender sends.

Every change is made before START_REPLICATION and a non-transactional logical message is emitted
last, so each test reads until that sentinel: the stream is complete and its order deterministic.
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from deltaforge.events import UNCHANGED
from deltaforge.sources.postgres.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    PgOutputDecoder,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleValues,
    Type,
    Update,
)
from deltaforge.sources.postgres.values import convert_tuple, converter_for
from tests.fixtures.data_stack import PgDatabase

DEADLINE_S = 30
SENTINEL_PREFIX = "deltaforge.test.done"
XLOG_DATA_HEADER_SIZE = 25  # 'w', start LSN, end LSN, send time
PG_EPOCH_OFFSET_US = 946_684_800_000_000


@contextmanager
def replication_connection(dsn: str, session_options: str) -> Iterator[pq.abc.PGconn]:
    # psycopg cannot leave COPY BOTH mode cleanly on exit, so the connection is closed by hand.
    connection = psycopg.connect(
        dsn, autocommit=True, replication="database", options=session_options, connect_timeout=10
    )
    try:
        yield connection.pgconn
    finally:
        connection.close()


def run(pgconn: pq.abc.PGconn, command: str, expected: pq.ExecStatus) -> None:
    result = pgconn.exec_(command.encode())
    assert result.status == expected, pgconn.error_message.decode()


def read_until_sentinel(pgconn: pq.abc.PGconn) -> list[Message]:
    """Decode the stream up to the sentinel message, answering keepalives, failing after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    decoder = PgOutputDecoder()
    messages: list[Message] = []
    while True:
        size, data = pgconn.get_copy_data(1)
        if size == -1:
            raise AssertionError(f"the replication stream ended: {pgconn.error_message.decode()}")
        if size == 0:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no sentinel within {DEADLINE_S}s; last messages: {messages[-5:]}"
            select.select([pgconn.socket], [], [], remaining)
            pgconn.consume_input()
            continue
        frame = memoryview(data)
        if frame[0] == ord("k"):
            if frame[17]:  # reply requested
                now_us = int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US
                pgconn.put_copy_data(b"r" + struct.pack(">QQQqB", 0, 0, 0, now_us, 0))
                pgconn.flush()
            continue
        assert frame[0] == ord("w")
        message = decoder.decode(frame[XLOG_DATA_HEADER_SIZE:])
        if isinstance(message, LogicalMessage) and message.prefix == SENTINEL_PREFIX:
            return messages
        messages.append(message)


def row(relation: Relation, values: TupleValues | None) -> dict[str, Any] | None:
    if values is None:
        return None
    converters = [converter_for(column.type_oid) for column in relation.columns]
    return dict(
        zip([column.name for column in relation.columns], convert_tuple(converters, values), strict=True)
    )


EVERY_TYPE_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE every_type (
    id int4 PRIMARY KEY,
    c_int2 int2, c_int8 int8, c_numeric numeric(20, 5), c_float8 float8,
    c_text text, c_varchar varchar(10), c_bool bool,
    c_tstz timestamptz, c_ts timestamp, c_date date, c_time time,
    c_uuid uuid, c_jsonb jsonb, c_json json, c_bytea bytea,
    c_int4s int4[], c_texts text[], c_numerics numeric[], c_mood mood,
    c_toast text
);
ALTER TABLE every_type ALTER COLUMN c_toast SET STORAGE EXTERNAL;
CREATE TABLE other (id serial PRIMARY KEY);
CREATE PUBLICATION pub FOR TABLE every_type, other;
"""
TOAST = "0123456789" * 1000  # 10 kB, stored out of line and uncompressed (STORAGE EXTERNAL)
ROW_1_SQL = """
INSERT INTO every_type VALUES (
    1, -32768, 9223372036854775807, 123456789012345.12345, 1.5,
    'héllo "wörld"', 'v', true,
    '2024-01-02 03:04:05.123456+02', '2024-01-02 03:04:05.5', '2024-02-29', '03:04:05',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2.5, null], "a": {"c": "d"}}', '[1, "two"]',
    '\\x0a0b', '{1,2,NULL}', ARRAY['a b', 'c"d', NULL, 'NULL', '', 'back\\slash', '{x}'],
    '{1.50,NaN,-3}', 'happy', repeat('0123456789', 1000)
)
"""
ROW_2_SQL = """
INSERT INTO every_type (id, c_numeric, c_float8, c_tstz, c_ts, c_date)
VALUES (2, 'NaN', 'NaN', 'infinity', '-infinity', 'infinity'), (3, NULL, '-Infinity', NULL, NULL, NULL)
"""
ROW_1 = {
    "id": 1,
    "c_int2": -32768,
    "c_int8": 9223372036854775807,
    "c_numeric": "123456789012345.12345",
    "c_float8": 1.5,
    "c_text": 'héllo "wörld"',
    "c_varchar": "v",
    "c_bool": True,
    "c_tstz": "2024-01-02T01:04:05.123456Z",
    "c_ts": "2024-01-02T03:04:05.500000",
    "c_date": "2024-02-29",
    "c_time": "03:04:05",
    "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "c_jsonb": {"a": {"c": "d"}, "b": [1, 2.5, None]},
    "c_json": [1, "two"],
    "c_bytea": "Cgs=",
    "c_int4s": [1, 2, None],
    "c_texts": ["a b", 'c"d', None, "NULL", "", "back\\slash", "{x}"],
    "c_numerics": ["1.50", "NaN", "-3"],
    "c_mood": "happy",
    "c_toast": TOAST,
}
NULL_ROW = dict.fromkeys(ROW_1)
ROW_2 = NULL_ROW | {
    "id": 2,
    "c_numeric": "NaN",
    "c_float8": "NaN",
    "c_tstz": "infinity",
    "c_ts": "-infinity",
    "c_date": "infinity",
}
ROW_3 = NULL_ROW | {"id": 3, "c_float8": "-Infinity"}


@dataclass(frozen=True)
class Recorded:
    messages: list[Message]
    mood_oid: int
    table_oids: tuple[int, int]
    before_us: int
    after_us: int


def record_protocol_1(pg_database: PgDatabase) -> Recorded:
    with (
        psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin,
        replication_connection(pg_database.cdc_dsn, "-c TimeZone=UTC -c DateStyle=ISO") as stream,
    ):
        admin.execute(EVERY_TYPE_DDL)
        run(stream, "CREATE_REPLICATION_SLOT s1 LOGICAL pgoutput", pq.ExecStatus.TUPLES_OK)
        before_us = time.time_ns() // 1000
        with admin.transaction():
            admin.execute(ROW_1_SQL)
            admin.execute(ROW_2_SQL)
        admin.execute("UPDATE every_type SET c_int2 = 7 WHERE id = 1")  # TOASTed value unchanged
        admin.execute("UPDATE every_type SET id = 20 WHERE id = 2")  # key change: old key 'K'
        admin.execute("DELETE FROM every_type WHERE id = 3")
        admin.execute("ALTER TABLE every_type REPLICA IDENTITY FULL")
        admin.execute("UPDATE every_type SET c_bool = false WHERE id = 1")  # whole old row 'O'
        admin.execute("DELETE FROM every_type WHERE id = 20")
        admin.execute("INSERT INTO other DEFAULT VALUES")
        admin.execute("TRUNCATE every_type, other RESTART IDENTITY CASCADE")
        admin.execute("SELECT pg_logical_emit_message(true, 'deltaforge.test', 'in a transaction ✓')")
        admin.execute("SELECT pg_logical_emit_message(false, %s, '')", [SENTINEL_PREFIX])
        after_us = time.time_ns() // 1000
        oids = admin.execute(
            "SELECT 'mood'::regtype::oid, 'every_type'::regclass::oid, 'other'::regclass::oid"
        ).fetchone()
        run(
            stream,
            "START_REPLICATION SLOT s1 LOGICAL 0/0 "
            "(proto_version '1', publication_names 'pub', messages 'true')",
            pq.ExecStatus.COPY_BOTH,
        )
        messages = read_until_sentinel(stream)
    assert oids is not None
    return Recorded(messages, oids[0], (oids[1], oids[2]), before_us, after_us)


def assert_framing(recorded: Recorded) -> None:
    assert [type(message).__name__ for message in recorded.messages] == [
        *("Begin", "Type", "Relation", "Insert", "Insert", "Insert", "Commit"),
        *("Begin", "Update", "Commit"),
        *("Begin", "Update", "Commit"),
        *("Begin", "Delete", "Commit"),
        # The ALTER invalidated the relation: its type and shape are sent again.
        *("Begin", "Type", "Relation", "Update", "Commit"),
        *("Begin", "Delete", "Commit"),
        *("Begin", "Relation", "Insert", "Commit"),
        *("Begin", "Type", "Relation", "Relation", "Truncate", "Commit"),
        *("Begin", "LogicalMessage", "Commit"),
    ]
    begins = [message for message in recorded.messages if isinstance(message, Begin)]
    commits = [message for message in recorded.messages if isinstance(message, Commit)]
    for begin, commit in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_ts_us == commit.commit_ts_us
        assert recorded.before_us - 1_000_000 <= commit.commit_ts_us <= recorded.after_us + 1_000_000
    assert [begin.xid for begin in begins] == sorted(begin.xid for begin in begins)

    (truncate,) = [message for message in recorded.messages if isinstance(message, Truncate)]
    assert truncate == Truncate(
        xid=None, relation_ids=recorded.table_oids, cascade=True, restart_identity=True
    )
    (logical,) = [message for message in recorded.messages if isinstance(message, LogicalMessage)]
    assert logical.transactional
    assert logical.prefix == "deltaforge.test"
    assert logical.content.decode() == "in a transaction ✓"
    assert logical.lsn == begins[-1].final_lsn


def assert_relations(recorded: Recorded) -> tuple[Relation, Relation, Relation]:
    (mood, *_) = [message for message in recorded.messages if isinstance(message, Type)]
    assert mood == Type(xid=None, type_oid=recorded.mood_oid, namespace="public", name="mood")

    relations = [message for message in recorded.messages if isinstance(message, Relation)]
    default, full, other = relations[0], relations[1], relations[2]
    assert (default.relation_id, default.namespace, default.name) == (
        recorded.table_oids[0],
        "public",
        "every_type",
    )
    assert [column.name for column in default.columns] == list(ROW_1)
    assert [column.type_oid for column in default.columns] == [
        *(23, 21, 20, 1700, 701, 25, 1043, 16, 1184, 1114, 1082, 1083),
        *(2950, 3802, 114, 17, 1007, 1009, 1231, recorded.mood_oid, 25),
    ]
    assert default.columns[3].type_modifier == (20 << 16 | 5) + 4  # numeric(20, 5)
    assert default.columns[6].type_modifier == 10 + 4  # varchar(10)
    assert (default.replica_identity, full.replica_identity) == ("d", "f")
    assert [column.is_key for column in default.columns] == [True] + [False] * 20
    assert all(column.is_key for column in full.columns), "FULL flags every column as key"
    assert (other.relation_id, other.name, other.replica_identity) == (recorded.table_oids[1], "other", "d")
    return default, full, other


def test_protocol_1_every_message_type_and_value(pg_database: PgDatabase) -> None:
    recorded = record_protocol_1(pg_database)
    assert_framing(recorded)
    default, full, other = assert_relations(recorded)

    changes = [message for message in recorded.messages if isinstance(message, Insert | Update | Delete)]
    assert all(change.xid is None for change in changes)
    inserts = [change for change in changes if isinstance(change, Insert)]
    assert [row(default, insert.new) for insert in inserts[:3]] == [ROW_1, ROW_2, ROW_3]
    assert row(other, inserts[3].new) == {"id": 1}

    updates = [change for change in changes if isinstance(change, Update)]
    deletes = [change for change in changes if isinstance(change, Delete)]
    # DEFAULT identity, key unchanged: no old tuple, and the TOASTed value is not sent at all.
    assert updates[0].old is None
    assert row(default, updates[0].new) == ROW_1 | {"c_int2": 7, "c_toast": UNCHANGED}
    # Key changed: the old key only, every other column NULL.
    assert updates[1].old_is_key
    assert row(default, updates[1].old) == NULL_ROW | {"id": 2}
    assert row(default, updates[1].new) == ROW_2 | {"id": 20}
    assert deletes[0].old_is_key
    assert row(default, deletes[0].old) == NULL_ROW | {"id": 3}
    # FULL: the whole old row, its TOASTed value in full; the new row still omits that value.
    assert not updates[2].old_is_key
    assert row(full, updates[2].old) == ROW_1 | {"c_int2": 7}
    assert row(full, updates[2].new) == ROW_1 | {"c_int2": 7, "c_bool": False, "c_toast": UNCHANGED}
    assert not deletes[1].old_is_key
    assert row(full, deletes[1].old) == ROW_2 | {"id": 20}


STREAMED_ROWS = 5000
ROLLED_BACK_ROWS = 2000
ROWS_AFTER_ROLLBACK = 10
INSERT_BIG = (
    "INSERT INTO big SELECT g, 'row-' || g, timestamptz '2024-01-02 03:04:05+00' + g * interval '1 s' "
    "FROM generate_series(%s::int, %s::int) AS g"
)


def record_protocol_2(pg_database: PgDatabase) -> tuple[list[Message], int, int]:
    """The stream of a small, a large committed and a large rolled-back transaction, and their xids."""
    # The walsender decides when to stream, so the memory limit is set on its session. The session
    # time zone is not UTC here: timestamptz values arrive with "+05:30" and must still be UTC.
    session = "-c logical_decoding_work_mem=64kB -c TimeZone=Asia/Kolkata -c DateStyle=ISO"
    with (
        psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin,
        replication_connection(pg_database.cdc_dsn, session) as stream,
    ):
        admin.execute("CREATE TABLE big (id int PRIMARY KEY, label text NOT NULL, at timestamptz NOT NULL)")
        admin.execute("CREATE PUBLICATION pub FOR TABLE big")
        run(stream, "CREATE_REPLICATION_SLOT s2 LOGICAL pgoutput", pq.ExecStatus.TUPLES_OK)
        admin.execute("INSERT INTO big VALUES (0, 'small', '2024-01-01 00:00:00+00')")
        with admin.transaction():
            big_txid = admin.execute("SELECT txid_current()").fetchone()
            admin.execute(INSERT_BIG, [1, STREAMED_ROWS])
            admin.execute("SAVEPOINT before_rollback")
            admin.execute(INSERT_BIG, [10_001, 10_000 + ROLLED_BACK_ROWS])
            admin.execute("ROLLBACK TO SAVEPOINT before_rollback")
            admin.execute(INSERT_BIG, [20_001, 20_000 + ROWS_AFTER_ROLLBACK])
        admin.execute("BEGIN")
        aborted_txid = admin.execute("SELECT txid_current()").fetchone()
        admin.execute(INSERT_BIG, [30_001, 33_000])
        admin.execute("ROLLBACK")
        admin.execute("SELECT pg_logical_emit_message(false, %s, '')", [SENTINEL_PREFIX])
        run(
            stream,
            "START_REPLICATION SLOT s2 LOGICAL 0/0 "
            "(proto_version '2', publication_names 'pub', streaming 'on', messages 'true')",
            pq.ExecStatus.COPY_BOTH,
        )
        messages = read_until_sentinel(stream)
    assert big_txid is not None
    assert aborted_txid is not None
    return messages, big_txid[0] % 2**32, aborted_txid[0] % 2**32


def streamed_inserts(streamed: list[Message], big_xid: int, aborted_xid: int) -> list[Insert]:
    """The inserts that committed, after checking the segment framing of both streamed transactions."""
    assert not any(isinstance(message, Begin | Commit) for message in streamed)
    starts = [message for message in streamed if isinstance(message, StreamStart)]
    assert len(starts) > 2, "64kB of decoding memory should split the transactions into segments"
    assert len(starts) == sum(isinstance(message, StreamStop) for message in streamed)
    assert {start.xid for start in starts} == {big_xid, aborted_xid}
    assert next(start.first_segment for start in starts if start.xid == big_xid)
    assert sum(start.first_segment for start in starts) == 2

    inside = False
    inserts_by_xid: dict[int, list[Insert]] = {}
    for message in streamed:
        if isinstance(message, StreamStart | StreamStop):
            inside = isinstance(message, StreamStart)
        elif isinstance(message, Relation | Insert):
            assert inside, f"{message} outside a stream segment"
            assert message.xid is not None, "messages in a stream carry their (sub)transaction id"
            if isinstance(message, Insert):
                inserts_by_xid.setdefault(message.xid, []).append(message)
        else:
            assert isinstance(message, StreamCommit | StreamAbort), message
            assert not inside

    aborts = [message for message in streamed if isinstance(message, StreamAbort)]
    commits = [message for message in streamed if isinstance(message, StreamCommit)]
    assert [commit.xid for commit in commits] == [big_xid]
    assert commits[0].commit_lsn < commits[0].end_lsn
    # The rolled-back savepoint is a subtransaction abort; the rolled-back transaction a whole one.
    assert [(abort.xid, abort.subxid == abort.xid) for abort in aborts] == [
        (big_xid, False),
        (aborted_xid, True),
    ]
    assert streamed.index(aborts[0]) < streamed.index(commits[0]) < streamed.index(aborts[1])

    # Changes made in a subtransaction carry the subtransaction's id: what commits is the
    # top-level transaction's changes plus those of its subtransactions that were not aborted.
    discarded = {abort.subxid for abort in aborts}
    return [insert for xid, inserts in inserts_by_xid.items() if xid not in discarded for insert in inserts]


def test_protocol_2_streams_a_large_transaction(pg_database: PgDatabase) -> None:
    messages, big_xid, aborted_xid = record_protocol_2(pg_database)

    # The small transaction is not streamed: Begin/Commit framing, no xid on its changes.
    assert [type(message).__name__ for message in messages[:4]] == ["Begin", "Relation", "Insert", "Commit"]
    relation, small = messages[1], messages[2]
    assert isinstance(relation, Relation)
    assert isinstance(small, Insert)
    assert small.xid is None
    assert row(relation, small.new) == {"id": 0, "label": "small", "at": "2024-01-01T00:00:00Z"}

    committed = streamed_inserts(messages[4:], big_xid, aborted_xid)
    raw_at = committed[0].new[2]
    assert isinstance(raw_at, bytes)
    assert raw_at.endswith(b"+05:30")
    assert all(insert.relation_id == relation.relation_id for insert in committed)
    rows = [row(relation, insert.new) for insert in committed]
    expected_ids = [*range(1, STREAMED_ROWS + 1), *range(20_001, 20_001 + ROWS_AFTER_ROLLBACK)]
    assert [decoded["id"] for decoded in rows if decoded] == expected_ids
    assert rows[0] == {"id": 1, "label": "row-1", "at": "2024-01-02T03:04:06Z"}
    assert rows[STREAMED_ROWS - 1] == {"id": 5000, "label": "row-5000", "at": "2024-01-02T04:27:25Z"}
