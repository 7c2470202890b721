"""Which transactions a restarted PostgreSQL source skips (everything its checkpoint covers), and
when a silent replication connection counts as dead."""

from __future__ import annotations

import sys

import pytest

from deltaforge.events import Checkpoint
from deltaforge.sources.errors import SourceConfigError, SourceUnavailable
from deltaforge.sources.postgres.resume import delivered_through
from deltaforge.sources.postgres.stream import SilenceWatch, parse_lsn


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
    assert delivered_through(resume, parse_lsn(commit)) == skipped


def test_a_checkpoint_of_another_source_is_a_configuration_error() -> None:
    with pytest.raises(SourceConfigError, match="not a PostgreSQL LSN"):
        delivered_through(Checkpoint("gtid=0-1-5;binlog=bin.000001:300", -1, 0), 0x100)


def test_only_an_unbroken_silence_longer_than_the_limit_means_a_dead_connection() -> None:
    watch = SilenceWatch(limit=30)
    watch.observe(False, 100.0)
    watch.observe(False, 129.0)
    watch.observe(True, 131.0)  # an answer: the silence starts over
    watch.observe(False, 140.0)
    watch.observe(False, 169.0)
    with pytest.raises(SourceUnavailable, match="dead or stalled"):
        watch.observe(False, 171.0)
