"""A checkpoint in a local file, replaced atomically (write, fsync, rename, fsync the directory)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from deltaforge.checkpoints import codec
from deltaforge.events import Checkpoint


class FileCheckpointStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> Checkpoint | None:
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except FileNotFoundError:
            return None
        return codec.load(data, str(self.path))

    async def save(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._write, codec.dump(checkpoint))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def close(self) -> None:
        return None
