"""Durations and quantities written the way Kubernetes users already write them.

Durations follow Go's spelling (`50ms`, `10s`, `1m30s`) and quantities follow Kubernetes
resource quantities (`4Mi`, `1G`), so a manifest reads like every other manifest in the cluster.
The model holds plain floats (seconds) and ints (bytes) so the runtime never parses units again.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER = re.compile(_NUMBER)
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h))+")
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}

_QUANTITY = re.compile(rf"({_NUMBER})(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?")
_QUANTITY_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}

_INT_OR_STRING: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
}


def parse_duration(value: object) -> float:
    """Seconds from `50ms`, `10s`, `5m`, `1h`, `1.5s`, `1m30s` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _PLAIN_NUMBER.fullmatch(text):
            return float(text)
        if _DURATION.fullmatch(text):
            total = sum(
                (Decimal(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)),
                start=Decimal(0),
            )
            return float(total)
    raise ValueError(f"{value!r} is not a duration; use e.g. 50ms, 10s, 5m")


def parse_quantity(value: object) -> int:
    """Bytes from `512Ki`, `4Mi`, `1Gi`, `1M`, `1000` (Kubernetes quantity suffixes)."""
    amount: Decimal | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            amount = Decimal(value)
    elif isinstance(value, str) and (match := _QUANTITY.fullmatch(value.strip())):
        amount = Decimal(match.group(1)) * _QUANTITY_UNITS[match.group(2)]
    if amount is None:
        raise ValueError(f"{value!r} is not a quantity; use e.g. 512Ki, 4Mi, 1Gi or a number of bytes")
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(amount)


def format_duration(seconds: float) -> str:
    """A manifest spelling of a duration that parses back to the same value: `50ms`, `10s`."""
    milliseconds = round(float(seconds) * 1000, 6)
    if not milliseconds.is_integer() or milliseconds / 1000 != seconds:
        return f"{Decimal(repr(float(seconds))):f}s"
    whole = int(milliseconds)
    return f"{whole // 1000}s" if whole % 1000 == 0 else f"{whole}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, when_used="json"),
    WithJsonSchema(_INT_OR_STRING),
]
"""A duration in seconds; manifests write `50ms`, `10s`, `5m`, `1h` or a number of seconds."""

PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]

Quantity = Annotated[
    int,
    BeforeValidator(parse_quantity),
    WithJsonSchema(_INT_OR_STRING),
]
"""A size in bytes; manifests write `512Ki`, `4Mi`, `1Gi`, `1M` or a number of bytes."""

PositiveQuantity = Annotated[Quantity, Field(gt=0)]
