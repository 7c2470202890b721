"""The stored form of a checkpoint: a small JSON document, the same for every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from deltaforge.events import Checkpoint

FORMAT_VERSION = 1


def dump(checkpoint: Checkpoint) -> bytes:
    return orjson.dumps(
        {
            "version": FORMAT_VERSION,
            "position": checkpoint.position,
            "index": checkpoint.index,
            "lsn": checkpoint.lsn,
            "updatedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
    )


def load(data: bytes | str, where: str) -> Checkpoint:
    try:
        document = orjson.loads(data)
        return Checkpoint(
            position=str(document["position"]), index=int(document["index"]), lsn=int(document.get("lsn", 0))
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"the checkpoint in {where} is unreadable ({error}); move it aside to start from the source's own position"
        ) from error
