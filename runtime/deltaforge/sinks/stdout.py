"""`stdout` sink: JSON lines on standard output, for local runs and debugging."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

import orjson

from deltaforge.envelopes import Encoder
from deltaforge.events import ChangeEvent, Checkpoint
from deltaforge.sinks.base import FailureKind, Health, SinkError


class StdoutSink:
    def __init__(
        self,
        name: str,
        *,
        required: bool,
        encode: Encoder,
        pretty: bool = False,
        stream: BinaryIO | None = None,
    ) -> None:
        self.name, self.required = name, required
        self._encode, self._pretty = encode, pretty
        self._stream = stream or sys.stdout.buffer
        self._health = Health()

    async def start(self) -> None:
        return None

    async def write(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        try:
            lines = [self._encode(event) for event in events]
        except TypeError as error:
            raise SinkError(FailureKind.SERIALIZATION, str(error)) from error
        if self._pretty:
            lines = [orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2) for line in lines]
        self._stream.write(b"\n".join(lines) + b"\n")
        self._stream.flush()

    async def close(self) -> None:
        self._stream.flush()

    def health(self) -> tuple[bool, str]:
        return self._health.as_tuple()
