"""Binlog positions: GTID sets of MySQL and MariaDB, and the one string a checkpoint stores.

For MySQL/MariaDB the coordinator's checkpoint store is the only durable position (there is no
server-side slot), and the coordinator builds a checkpoint from an event's `SourceInfo.position`.
So every event carries everything needed to resume, in one string of `;`-separated fields:

    gtid=0-1-42;prior=0-1-41;binlog=mariadb-bin.000003:1234

- `gtid`: the transaction's GTID (MariaDB `domain-server-seq`, MySQL `uuid:n`). It is the
  transaction's identity: event ids derive from it, so a replay from another binlog file (after
  a failover) still carries the same ids. Absent when the server has no GTIDs (MySQL with
  gtid_mode=OFF) and for a point between transactions (the start position).
- `prior`: the GTID set executed before the transaction: MariaDB's per-domain state
  (`gtid_binlog_pos` syntax, `0-1-41,1-7-9`), MySQL's GTID set (`uuid:1-41,uuid2:1-5`). A
  partially delivered transaction is re-read from here; a complete one resumes from `prior` plus
  `gtid`.
- `binlog`: the file and offset where the transaction starts. Without GTIDs this is the resume
  point: the transaction is read again from there and its delivered changes skipped (its end is
  unknown when its first change is emitted). With GTIDs it is informational, and what the purge
  check compares with SHOW BINARY LOGS.
- `at` instead of `binlog` (and no `gtid`): a point between transactions, such as the position a
  pipeline started from; it resumes exactly there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deltaforge.sources.errors import SourceConfigError

_MARIADB_GTID = re.compile(r"(\d+)-(\d+)-(\d+)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INTERVAL = re.compile(r"(\d+)(?:-(\d+))?")


def is_mariadb_gtid(text: str) -> bool:
    return _MARIADB_GTID.fullmatch(text) is not None


class MariadbGtidState:
    """MariaDB's replication state: the last GTID applied in each domain (`0-1-42,1-2-7`).

    MariaDB resumes a replica from such a state (`@slave_connect_state`); it is not a set: a
    domain's position is its newest GTID, whatever server wrote it.
    """

    def __init__(self, domains: dict[int, tuple[int, int]] | None = None) -> None:
        self.domains: dict[int, tuple[int, int]] = dict(domains or {})  # domain -> (server, seq)

    @classmethod
    def parse(cls, text: str) -> MariadbGtidState:
        state = cls()
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            state.add(part)
        return state

    def add(self, gtid: str) -> None:
        found = _MARIADB_GTID.fullmatch(gtid)
        if found is None:
            raise ValueError(f"{gtid!r} is not a MariaDB GTID (domain-server-sequence)")
        domain, server, seq = (int(group) for group in found.groups())
        self.domains[domain] = (server, seq)

    def copy(self) -> MariadbGtidState:
        return MariadbGtidState(self.domains)

    def behind(self, oldest: MariadbGtidState) -> list[str]:
        """Domains whose history before `oldest` (the state where the oldest binlog starts) we
        have not fully read: their events are gone from the server."""
        lost = []
        for domain, (_, seq) in sorted(oldest.domains.items()):
            mine = self.domains.get(domain)
            if mine is None or mine[1] < seq:
                lost.append(f"{domain}-{oldest.domains[domain][0]}-{seq}")
        return lost

    def __str__(self) -> str:
        return ",".join(f"{d}-{server}-{seq}" for d, (server, seq) in sorted(self.domains.items()))


class MysqlGtidSet:
    """A MySQL GTID set (`uuid:1-41:45,uuid2:1-5`): for each server uuid, closed intervals."""

    def __init__(self, intervals: dict[str, list[tuple[int, int]]] | None = None) -> None:
        self.intervals: dict[str, list[tuple[int, int]]] = {
            uuid: list(ranges) for uuid, ranges in (intervals or {}).items()
        }

    @classmethod
    def parse(cls, text: str) -> MysqlGtidSet:
        gtids = cls()
        for member in filter(None, (piece.strip() for piece in text.replace("\n", "").split(","))):
            uuid, _, ranges = member.partition(":")
            if not _UUID.fullmatch(uuid) or not ranges:
                raise ValueError(f"{member!r} is not a MySQL GTID set member (uuid:interval[:interval])")
            for interval in ranges.split(":"):
                found = _INTERVAL.fullmatch(interval)
                if found is None:
                    raise ValueError(f"{interval!r} in {member!r} is not an interval (n or n-m)")
                first = int(found.group(1))
                gtids.add_range(uuid.lower(), first, int(found.group(2) or first))
        return gtids

    def add(self, gtid: str) -> None:
        uuid, _, number = gtid.rpartition(":")
        if not _UUID.fullmatch(uuid) or not number.isdigit():
            raise ValueError(f"{gtid!r} is not a MySQL GTID (uuid:number)")
        self.add_range(uuid.lower(), int(number), int(number))

    def add_range(self, uuid: str, first: int, last: int) -> None:
        ranges = self.intervals.setdefault(uuid, [])
        if ranges and ranges[-1][1] + 1 >= first >= ranges[-1][0]:  # the usual case: extend the tail
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
            return
        ranges.append((first, last))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for start, end in ranges:
            if merged and start <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self.intervals[uuid] = merged

    def copy(self) -> MysqlGtidSet:
        return MysqlGtidSet(self.intervals)

    def contains(self, other: MysqlGtidSet) -> bool:
        """Whether every GTID of `other` is in this set (MySQL's GTID_SUBSET(other, self))."""
        for uuid, ranges in other.intervals.items():
            mine = self.intervals.get(uuid, [])
            for start, end in ranges:
                if not any(first <= start and end <= last for first, last in mine):
                    return False
        return True

    def __str__(self) -> str:
        return ",".join(
            uuid + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in ranges)
            for uuid, ranges in sorted(self.intervals.items())
            if ranges
        )


GtidState = MariadbGtidState | MysqlGtidSet


def parse_gtid_state(text: str, *, mariadb: bool) -> GtidState:
    return MariadbGtidState.parse(text) if mariadb else MysqlGtidSet.parse(text)


@dataclass(frozen=True)
class ResumePoint:
    """Where a binlog reader starts: after a GTID state, or at a file offset when there are no GTIDs."""

    gtid_state: str | None
    file: str
    offset: int


SKIP_ALL = 2**62  # a Skip index past any transaction's last change


@dataclass(frozen=True)
class Skip:
    """Changes of the transaction `identity` at or below `index` were delivered already."""

    identity: str
    index: int


@dataclass(frozen=True)
class BinlogPosition:
    """The position of one transaction, or (`point`) of a place between transactions."""

    gtid: str | None
    prior: str | None
    file: str
    offset: int  # where the transaction (or the point) starts in `file`
    point: bool = False

    @property
    def identity(self) -> str:
        """What event ids derive from: the GTID, or the binlog file and offset of the transaction."""
        return self.gtid if self.gtid is not None else f"{self.file}:{self.offset}"

    @property
    def mariadb(self) -> bool:
        sample = self.gtid or (self.prior or "").split(",")[0]
        return is_mariadb_gtid(sample) if sample else False

    def format(self) -> str:
        fields = []
        if self.gtid is not None:
            fields.append(f"gtid={self.gtid}")
        if self.prior is not None:
            fields.append(f"prior={self.prior}")
        fields.append(f"{'at' if self.point else 'binlog'}={self.file}:{self.offset}")
        return ";".join(fields)

    def before(self) -> ResumePoint:
        """Where to read this transaction again from its start."""
        return ResumePoint(self.prior, self.file, self.offset)

    def resume(self, index: int) -> tuple[ResumePoint, Skip | None]:
        """Where to resume once the changes of this transaction up to `index` were delivered
        (-1: all of them), and what to skip there."""
        if self.point:
            return self.before(), None
        if self.gtid is None:
            # Without GTIDs the end of a transaction is not known when its first change is
            # emitted: read it again from its start and skip what was delivered (all of it).
            return self.before(), Skip(self.identity, SKIP_ALL if index < 0 else index)
        if index >= 0:
            return self.before(), Skip(self.identity, index)
        gtids = parse_gtid_state(self.prior or "", mariadb=is_mariadb_gtid(self.gtid))
        gtids.add(self.gtid)
        return ResumePoint(str(gtids), self.file, self.offset), None

    @classmethod
    def parse(cls, text: str) -> BinlogPosition:
        """The position written by `format`; a SourceConfigError for anything else, since a
        checkpoint we cannot read must not be skipped over silently."""
        fields: dict[str, str] = {}
        for part in text.split(";"):
            name, equals, value = part.partition("=")
            if not equals or name not in ("gtid", "prior", "binlog", "at") or name in fields:
                raise _unreadable(text)
            fields[name] = value
        point = "at" in fields
        if point == ("binlog" in fields):
            raise _unreadable(text)
        file, colon, offset = fields["at" if point else "binlog"].rpartition(":")
        if not (file and colon and offset.isdigit()) or (point and "gtid" in fields):
            raise _unreadable(text)
        position = cls(fields.get("gtid"), fields.get("prior"), file, int(offset), point)
        try:
            if position.gtid is not None:
                parse_gtid_state(position.gtid, mariadb=is_mariadb_gtid(position.gtid))
            if position.prior:
                parse_gtid_state(position.prior, mariadb=position.mariadb)
        except ValueError as error:
            raise _unreadable(text) from error
        return position


def _unreadable(text: str) -> SourceConfigError:
    return SourceConfigError(
        f"the stored checkpoint position {text!r} is not a MySQL/MariaDB binlog position "
        "(gtid=...;prior=...;binlog=file:offset): the checkpoint belongs to another source; "
        "delete the pipeline's checkpoint (file or ConfigMap) to start from the current binlog position"
    )
