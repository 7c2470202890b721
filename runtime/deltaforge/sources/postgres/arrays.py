"""PostgreSQL's array output format ('{1,2,NULL}', '{{1,2},{3,4}}', '[0:1]={a,b}') as JSON lists.

Elements are converted by the element type's text converter (see `values`), so an array of
timestamptz gives the same strings as a timestamptz column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

TextConverter: TypeAlias = Callable[[str], Any]

_ARRAY_TOKEN: Final = re.compile(r'[{},]|"((?:[^"\\]|\\.)*)"|([^{},"\s]+)|\s+', re.DOTALL)
_ESCAPED: Final = re.compile(r"\\(.)", re.DOTALL)


def parse_array(text: str, element: TextConverter) -> list[Any]:
    """PostgreSQL's array output ('{1,2,NULL}', '{{1,2},{3,4}}', '[0:1]={a,b}') as nested lists.

    Unquoted NULL is SQL NULL (None); a quoted "NULL" is the string. Explicit bounds, which the
    server writes when a lower bound is not 1, are dropped: a JSON list has no lower bound.
    """
    if text[:1] == "[":
        text = text[text.index("=") + 1 :]
    if (
        text[:1] == "{"
        and text.find("{", 1) == -1
        and text.find("}") == len(text) - 1
        and '"' not in text
        and "\\" not in text
        and " " not in text
    ):
        # One dimension, nothing quoted: the common case (numbers, simple words) needs no scanner.
        inner = text[1:-1]
        if not inner:
            return []
        return [None if item == "NULL" else element(item) for item in inner.split(",")]
    return _parse_nested(text, element)


def _parse_nested(text: str, element: TextConverter) -> list[Any]:
    root: list[Any] | None = None
    stack: list[list[Any]] = []
    position = 0
    for token in _ARRAY_TOKEN.finditer(text):
        if token.start() != position:
            raise ValueError(f"malformed array literal at offset {position}: {text!r}")
        position = token.end()
        symbol = token[0]
        if symbol == "{":
            nested: list[Any] = []
            if stack:
                stack[-1].append(nested)
            elif root is not None:
                raise ValueError(f"malformed array literal: text after the array: {text!r}")
            else:
                root = nested
            stack.append(nested)
        elif symbol == "}":
            if not stack:
                raise ValueError(f"malformed array literal: unbalanced '}}': {text!r}")
            stack.pop()
        elif symbol == "," or symbol.isspace():
            continue
        elif not stack:
            raise ValueError(f"malformed array literal: element outside braces: {text!r}")
        elif token[1] is not None:  # quoted: always a value, even "NULL"
            stack[-1].append(element(_ESCAPED.sub(r"\1", token[1])))
        elif symbol == "NULL":
            stack[-1].append(None)
        else:
            stack[-1].append(element(_ESCAPED.sub(r"\1", symbol) if "\\" in symbol else symbol))
    if root is None or stack or position != len(text):
        raise ValueError(f"malformed array literal: {text!r}")
    return root


def array_converter(element: TextConverter) -> Callable[[bytes], list[Any]]:
    """The converter of an array column whose elements `element` converts."""

    def converter(raw: bytes) -> list[Any]:
        return parse_array(raw.decode(), element)

    return converter
