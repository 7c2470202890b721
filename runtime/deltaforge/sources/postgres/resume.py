"""Which transactions a restarted PostgreSQL source skips: everything its checkpoint covers.

The slot is confirmed only at complete checkpoints, and a little after them, so after a restart
the server sends again transactions the checkpoint already covers. Every transaction committed
before the checkpoint's own was delivered whole; the checkpoint's transaction was delivered up
to the checkpoint's index (a large transaction is cut into several batches).
"""

from __future__ import annotations

import sys

from deltaforge.events import Checkpoint
from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.postgres.stream import parse_lsn


def delivered_through(resume: Checkpoint | None, commit_lsn: int) -> int:
    """How much of the transaction committed at `commit_lsn` was delivered before: -1 nothing,
    an index, or `sys.maxsize` for all of it."""
    if resume is None:
        return -1
    checkpoint_commit = _commit_lsn(resume)
    if commit_lsn < checkpoint_commit or (commit_lsn == checkpoint_commit and resume.complete):
        return sys.maxsize
    if commit_lsn == checkpoint_commit:
        return resume.index
    return -1


def _commit_lsn(checkpoint: Checkpoint) -> int:
    """The commit LSN a checkpoint's position names (a transaction's, or a heartbeat's)."""
    try:
        return parse_lsn(checkpoint.position)
    except ValueError as error:
        raise SourceConfigError(
            f"the checkpoint's position {checkpoint.position!r} is not a PostgreSQL LSN: it belongs to "
            "another source; remove the pipeline's checkpoint to start from the slot's position"
        ) from error
