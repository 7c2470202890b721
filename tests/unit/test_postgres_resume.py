"""Which transactions a restarted PostgreSQL source skips: everything its checkpoint covers.

After a crash the slot sends again every transaction after its confirmed position, which trails
the checkpoint (the slot is confirmed only at complete checkpoints, and a little later). Anything
committed before the checkpoint's transaction was delivered whole and must be skipped; the
checkpoint's own transaction is skipped up to its index.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from deltaforge.events import Checkpoint
from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.patterns import TablePatterns
from deltaforge.sources.postgres.connection import PostgresSettings
from deltaforge.sources.postgres.source import PostgresSource, PostgresSourceConfig
from deltaforge.sources.postgres.stream import parse_lsn


class _NoMetrics:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _source(resume: Checkpoint | None) -> PostgresSource:
    config = PostgresSourceConfig(
        PostgresSettings(host="pg", port=5432, database="shop", user="cdc", password=None),
        TablePatterns(["public.*"]),
        "slot",
        False,
        "publication",
        False,
        0,
    )
    return PostgresSource(config, resume=resume, metrics=_NoMetrics(), log=lambda *_, **__: None)


@pytest.mark.parametrize(
    ("resume", "commit", "skipped"),
    [
        (None, "0/100", -1),
        (Checkpoint("0/200", -1, 0x210), "0/100", sys.maxsize),  # before a complete checkpoint
        (Checkpoint("0/200", -1, 0x210), "0/200", sys.maxsize),  # the checkpoint's own transaction
        (Checkpoint("0/200", -1, 0x210), "0/300", -1),  # after it
        (Checkpoint("0/200", 41, 0), "0/100", sys.maxsize),  # before a mid-transaction checkpoint
        (Checkpoint("0/200", 41, 0), "0/200", 41),  # the cut transaction: up to its index
        (Checkpoint("0/200", 41, 0), "0/300", -1),
        (Checkpoint("1/0", -1, 0x100000010), "0/FFFFFFFF", sys.maxsize),  # LSNs compare as numbers
    ],
)
def test_a_restart_skips_what_the_checkpoint_covers(
    resume: Checkpoint | None, commit: str, skipped: int
) -> None:
    assert _source(resume)._delivered_through(parse_lsn(commit)) == skipped


def test_a_checkpoint_of_another_source_is_a_configuration_error() -> None:
    source = _source(Checkpoint("gtid=0-1-5;binlog=bin.000001:300", -1, 0))
    with pytest.raises(SourceConfigError, match="not a PostgreSQL LSN"):
        source._delivered_through(0x100)
