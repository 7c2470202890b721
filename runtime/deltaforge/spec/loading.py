"""Reading a manifest (YAML or JSON text, a file, or decoded data) into a validated Pipeline.

Every way in ends in `SpecError` with all problems at once, so `deltaforge validate`, the worker
and the operator report a bad manifest identically and never with a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml  # type: ignore[import-untyped,unused-ignore]
from pydantic import ValidationError

from deltaforge.spec.errors import Issue, SpecError
from deltaforge.spec.issues import issues_from_validation
from deltaforge.spec.pipeline import Pipeline

_JSON_START = re.compile(r'\s*\{\s*"')
_SHAPE = "a manifest must be a mapping with apiVersion, kind, metadata and spec"


def _construct_unique_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
    first_lines: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen_on = first_lines.get(key)
        except TypeError:
            continue  # an unhashable key; construct_mapping reports it
        if seen_on is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen_on})", key_node.start_mark
            )
        first_lines[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


# Plain YAML keeps the last of two equal keys, so a second `sinks:` would silently replace the first.
_UniqueKeyLoader: Any = type("_UniqueKeyLoader", (yaml.SafeLoader,), {})
_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _decode(text: str, source_name: str) -> object:
    # JSON goes to a JSON parser (YAML 1.1 reads `1e3` as a string); `{apiVersion: ...}` is YAML.
    if _JSON_START.match(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise SpecError([Issue("", message)], source=source_name) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([Issue("", f"invalid YAML{where}: {problem}")], source=source_name) from None
    except yaml.YAMLError as exc:
        raise SpecError([Issue("", f"invalid YAML: {exc}")], source=source_name) from None


def _plain(value: object) -> object:
    """Plain dicts and lists from any Mapping or sequence, such as the views kopf hands over."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def parse_pipeline(data: object, *, source_name: str = "<manifest>") -> Pipeline:
    """Validate decoded manifest data (dicts and lists, e.g. an object from the API server)."""
    if data is None:
        raise SpecError([Issue("", "the manifest is empty")], source=source_name)
    if not isinstance(data, Mapping):
        names: dict[type, str] = {list: "a list", str: "a plain string"}
        kind = names.get(type(data), f"a {type(data).__name__}")
        raise SpecError([Issue("", f"{_SHAPE}; got {kind}")], source=source_name)
    try:
        return Pipeline.model_validate(_plain(data))
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc, Pipeline), source=source_name) from None


def load_manifest(text: str, *, source_name: str = "<manifest>") -> Pipeline:
    """Parse and validate one Pipeline manifest written in YAML or JSON."""
    return parse_pipeline(_decode(text, source_name), source_name=source_name)


def load_manifest_file(path: str | os.PathLike[str]) -> Pipeline:
    """Read, parse and validate a manifest file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError([Issue("", "the file is not UTF-8 text")], source=str(path)) from None
    except OSError as exc:
        raise SpecError([Issue("", f"cannot read the file: {exc.strerror}")], source=str(path)) from None
    return load_manifest(text, source_name=str(path))


def validate_manifest_file(path: str | os.PathLike[str]) -> list[str]:
    """The lines `deltaforge validate` prints: one `<file>: <path>: <message>` per problem.

    Empty when the manifest is valid.
    """
    try:
        load_manifest_file(path)
    except SpecError as exc:
        return [f"{path}: {line}" for line in exc.lines()]
    return []
