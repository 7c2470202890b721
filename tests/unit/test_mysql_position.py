"""Binlog positions: GTID state arithmetic, the checkpoint string, resume points, server ids."""

from __future__ import annotations

import pytest

from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.mysql.config import SERVER_ID_MAX, SERVER_ID_MIN, derive_server_id
from deltaforge.sources.mysql.position import (
    SKIP_ALL,
    BinlogPosition,
    MariadbGtidState,
    MysqlGtidSet,
    ResumePoint,
    Skip,
)
from deltaforge.sources.mysql.preflight import purged

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "19d69c1e-ae97-4b8c-a1ef-9e12ba966457"


def test_mariadb_state_keeps_the_newest_gtid_per_domain() -> None:
    state = MariadbGtidState.parse("0-1-41,1-7-9")
    state.add("0-2-42")  # a failover: another server continues domain 0
    state.add("3-1-1")
    assert str(state) == "0-2-42,1-7-9,3-1-1"
    assert str(MariadbGtidState.parse("")) == ""


def test_mariadb_state_behind_the_oldest_binlog_names_the_lost_domains() -> None:
    oldest = MariadbGtidState.parse("0-1-100,1-1-5")
    assert MariadbGtidState.parse("0-1-100,1-1-7").behind(oldest) == []
    assert MariadbGtidState.parse("0-1-99,1-1-7").behind(oldest) == ["0-1-100"]
    assert MariadbGtidState.parse("0-1-120").behind(oldest) == ["1-1-5"], "a domain we never saw is lost too"


def test_mysql_gtid_set_adds_merges_and_prints_canonically() -> None:
    gtids = MysqlGtidSet.parse(f"{UUID_A.upper()}:1-3:5, {UUID_B}:7")
    gtids.add(f"{UUID_A}:4")
    gtids.add(f"{UUID_B}:8")
    gtids.add(f"{UUID_B}:1")
    assert str(gtids) == f"{UUID_B}:1:7-8,{UUID_A}:1-5"
    assert MysqlGtidSet.parse(f"{UUID_A}:1-10").contains(MysqlGtidSet.parse(f"{UUID_A}:2-4:7"))
    assert not MysqlGtidSet.parse(f"{UUID_A}:1-10").contains(MysqlGtidSet.parse(f"{UUID_A}:9-11"))
    assert not MysqlGtidSet.parse(f"{UUID_A}:1-10").contains(MysqlGtidSet.parse(f"{UUID_B}:1"))
    with pytest.raises(ValueError, match="not a MySQL GTID"):
        gtids.add("0-1-2")


@pytest.mark.parametrize(
    "position",
    [
        BinlogPosition("0-1-42", "0-1-41,1-2-3", "mariadb-bin.000003", 1234),
        BinlogPosition(f"{UUID_A}:42", f"{UUID_A}:1-41", "binlog.000007", 99),
        BinlogPosition(None, None, "mysql-bin.000001", 4),
        BinlogPosition(None, "0-1-41", "mariadb-bin.000003", 5000, point=True),
        BinlogPosition(None, "", "mariadb-bin.000001", 4, point=True),
    ],
)
def test_position_string_round_trips(position: BinlogPosition) -> None:
    assert BinlogPosition.parse(position.format()) == position


def test_position_string_format_is_documented() -> None:
    position = BinlogPosition("0-1-42", "0-1-41", "mariadb-bin.000003", 1234)
    assert position.format() == "gtid=0-1-42;prior=0-1-41;binlog=mariadb-bin.000003:1234"
    assert position.identity == "0-1-42"
    assert BinlogPosition(None, None, "mysql-bin.000001", 4).identity == "mysql-bin.000001:4"


@pytest.mark.parametrize(
    "text",
    ["0/16B6C50", "gtid=0-1-42", "gtid=x;binlog=f:1", "binlog=f:x", "at=f:1;binlog=f:2", "gtid=0-1-2;at=f:1"],
)
def test_unreadable_positions_fail_with_the_fix(text: str) -> None:
    with pytest.raises(SourceConfigError, match="delete the pipeline's checkpoint"):
        BinlogPosition.parse(text)


def test_resume_after_a_complete_gtid_transaction_adds_its_gtid() -> None:
    mariadb = BinlogPosition("0-1-42", "0-1-41,1-2-3", "mariadb-bin.000003", 1234)
    assert mariadb.resume(-1) == (ResumePoint("0-1-42,1-2-3", "mariadb-bin.000003", 1234), None)
    mysql = BinlogPosition(f"{UUID_A}:42", f"{UUID_A}:1-41", "binlog.000007", 99)
    assert mysql.resume(-1)[0].gtid_state == f"{UUID_A}:1-42"


def test_resume_inside_a_transaction_reads_it_again_and_skips_what_was_delivered() -> None:
    position = BinlogPosition("0-1-42", "0-1-41", "mariadb-bin.000003", 1234)
    assert position.resume(7) == (ResumePoint("0-1-41", "mariadb-bin.000003", 1234), Skip("0-1-42", 7))


def test_resume_without_gtids_rereads_the_transaction_and_skips_it_whole() -> None:
    position = BinlogPosition(None, None, "mysql-bin.000002", 4096)
    start = ResumePoint(None, "mysql-bin.000002", 4096)
    assert position.resume(-1) == (start, Skip("mysql-bin.000002:4096", SKIP_ALL))
    assert position.resume(3) == (start, Skip("mysql-bin.000002:4096", 3))


def test_resume_at_a_point_starts_exactly_there() -> None:
    point = BinlogPosition(None, "0-1-41", "mariadb-bin.000003", 5000, point=True)
    assert point.resume(-1) == (ResumePoint("0-1-41", "mariadb-bin.000003", 5000), None)


def test_purge_check_compares_with_the_oldest_binlog() -> None:
    binlogs = ["mariadb-bin.000004", "mariadb-bin.000005"]
    kept = ResumePoint("0-1-50", "mariadb-bin.000005", 4)
    lost = ResumePoint("0-1-20", "mariadb-bin.000002", 4)
    assert purged(kept, mariadb=True, binlogs=binlogs, oldest_state="0-1-30", gtid_purged="") is None
    assert "0-1-30" in (
        purged(lost, mariadb=True, binlogs=binlogs, oldest_state="0-1-30", gtid_purged="") or ""
    )
    mysql_kept = ResumePoint(f"{UUID_A}:1-50", "binlog.000009", 4)
    assert (
        purged(mysql_kept, mariadb=False, binlogs=binlogs, oldest_state="", gtid_purged=f"{UUID_A}:1-30")
        is None
    )
    reason = purged(mysql_kept, mariadb=False, binlogs=binlogs, oldest_state="", gtid_purged=f"{UUID_A}:1-60")
    assert reason is not None
    assert "gtid_purged" in reason
    by_file = ResumePoint(None, "mysql-bin.000002", 4)
    assert "mysql-bin.000002" in (
        purged(by_file, mariadb=False, binlogs=binlogs, oldest_state="", gtid_purged="") or ""
    )


def test_server_id_is_deterministic_and_out_of_the_usual_replica_range() -> None:
    first = derive_server_id("shop", "orders-cdc")
    assert first == derive_server_id("shop", "orders-cdc")
    assert first != derive_server_id("shop", "orders-cdc2")
    assert derive_server_id("shop-eu", "orders") != derive_server_id("shop", "eu-orders")
    ids = {derive_server_id("ns", f"pipeline-{n}") for n in range(2000)}
    assert len(ids) == 2000
    assert all(SERVER_ID_MIN <= value <= SERVER_ID_MAX for value in ids)
    assert SERVER_ID_MAX == 2**32 - 1
