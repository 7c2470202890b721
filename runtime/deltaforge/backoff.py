"""Capped exponential backoff with full jitter, for every retry loop of the worker (sinks and
sources): many workers that lost the same server spread their reconnects instead of arriving
together."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.2  # the bound of the first delay, in seconds; it doubles per attempt
    maximum: float = 10.0  # the bound never grows past this
    floor: float = 0.0  # the shortest delay

    def delay(self, attempt: int) -> float:
        """A delay for retry number `attempt` (0 for the first), uniform between the floor and the
        bound."""
        return random.uniform(self.floor, min(self.maximum, self.initial * 2**attempt))


# A source reconnecting to its database (docs/guarantees.md): the server may be restarting.
SOURCE_RECONNECT: Final = Backoff(initial=0.5, maximum=30.0, floor=0.1)
