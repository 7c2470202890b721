"""What the binlog reader thread hands to the event loop: plain records, already decoded.

The thread turns mysql-replication's events into these (rows converted to JSON-ready values,
unwanted tables dropped), so the loop side only assembles transactions and never touches the
library or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltaforge.events import Op
from deltaforge.sources.mysql.catalog import TableShape

Row = dict[str, Any]


@dataclass(slots=True)
class Begin:
    """A transaction starts: its GTID (None without GTIDs) and where in the binlog it begins."""

    gtid: str | None
    file: str
    start: int
    timestamp: int  # binlog event time, seconds since the epoch


@dataclass(slots=True)
class Rows:
    """Row changes of one table from one rows event: (before, after) pairs."""

    shape: TableShape
    op: Op
    rows: list[tuple[Row | None, Row | None]]
    size: int  # bytes of the binlog event, shared out among its rows for batch limits


@dataclass(slots=True)
class Truncate:
    """TRUNCATE TABLE of a captured table (a statement: the binlog has no rows for it)."""

    schema: str
    table: str


@dataclass(slots=True)
class Commit:
    """The transaction ends (XID, COMMIT/ROLLBACK query, or the end of a standalone statement)."""

    xid: int | None
    file: str
    end: int  # binlog offset just after the commit
    timestamp: int


@dataclass(slots=True)
class Heartbeat:
    """The server has nothing more to send: the stream is caught up and alive."""


@dataclass(slots=True)
class Connected:
    """The binlog connection is up and the first event arrived."""


@dataclass(slots=True)
class Failed:
    """The reader stopped on an error; the loop decides whether to reconnect."""

    error: BaseException


Record = Begin | Rows | Truncate | Commit | Heartbeat | Connected | Failed
