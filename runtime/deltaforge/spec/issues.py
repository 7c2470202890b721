"""Pydantic validation errors rewritten as plain-English issues with manifest paths.

Messages never quote the rejected value except where it cannot be a credential (enum choices,
units, names), so a password typed into the wrong field does not end up in a log.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from deltaforge.spec.errors import Issue, render_path

_FIXED_MESSAGES = {
    "missing": "required field is missing",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_too_short": "must not be empty",
}


def issues_from_validation(error: ValidationError, root: type[BaseModel]) -> list[Issue]:
    """One issue per pydantic error; `root` is the model validated, to list allowed fields."""
    return [
        Issue(render_path(detail["loc"]), _message(detail, root))
        for detail in error.errors(include_url=False, include_input=True)
    ]


def _message(detail: ErrorDetails, root: type[BaseModel]) -> str:
    kind = detail["type"]
    context: dict[str, Any] = detail.get("ctx") or {}
    if kind in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[kind]
    match kind:
        case "extra_forbidden":
            return _unknown_field(detail["loc"], root)
        case "literal_error" | "enum":
            return f"must be {context['expected']}; got {_describe(detail['input'])}"
        case "greater_than":
            return f"must be greater than {context['gt']}"
        case "greater_than_equal":
            return f"must be at least {context['ge']}"
        case "less_than_equal":
            return f"must be at most {context['le']}"
        case "too_short":
            count = context["min_length"]
            return "must not be empty" if count == 1 else f"must have at least {count} items"
        case "too_long":
            return f"must have at most {context['max_length']} items"
        case "string_too_long":
            return f"must be at most {context['max_length']} characters"
        case "value_error":
            return detail["msg"].removeprefix("Value error, ")
    return detail["msg"]


def _describe(value: object) -> str:
    if isinstance(value, str | int | float | bool):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:37]}..."
    return f"a {type(value).__name__}"


def _unknown_field(loc: Sequence[str | int], root: type[BaseModel]) -> str:
    key = loc[-1]
    message = f"unknown field {key!r}"
    model = _model_at(root, loc[:-1])
    if model is None:
        return message
    allowed = [info.alias or name for name, info in model.model_fields.items()]
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return f"{message}; allowed fields: {', '.join(allowed)}"


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validated the value at `loc`, found by walking field annotations."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            name = next((n for n, info in fields.items() if part in (n, info.alias)), None)
            if name is None:
                return None
            current = fields[name].annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `| None` down to the type that does the validating."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            members = [arg for arg in get_args(annotation) if arg is not NoneType]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
