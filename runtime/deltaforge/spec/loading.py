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
# Kubernetes stores an object in etcd only up to 1.5 MiB; a Pipeline is a few KiB. Refused before
# parsing, so a huge file costs neither time nor memory.
MAX_MANIFEST_BYTES = 1024 * 1024
# YAML aliases may repeat a node anywhere: ten levels of ten aliases are 10^10 values once
# expanded ("billion laughs"). The expanded size is computed on the node graph first.
MAX_EXPANDED_NODES = 100_000
_TOO_DEEP = "the manifest is nested too deeply to be a Pipeline"


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


class _ExpansionError(Exception):
    pass


def _load_yaml(text: str) -> object:
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it beyond `MAX_EXPANDED_NODES` values."""
    sizes: dict[int, int] = {}
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:  # post-order without recursion: depth is checked by the parser, not here
        node, children_done = pending.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            pending.append((node, True))
            pending.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 0) for child in children)
        if sizes[id(node)] > MAX_EXPANDED_NODES:
            raise _ExpansionError(
                f"the manifest expands to more than {MAX_EXPANDED_NODES:,} values through YAML aliases "
                "(anchors `&` referred to by `*`); write it out without aliases"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _decode(text: str, source_name: str) -> object:
    # JSON goes to a JSON parser (YAML 1.1 reads `1e3` as a string); `{apiVersion: ...}` is YAML.
    if len(text) > MAX_MANIFEST_BYTES:
        message = f"the manifest is {len(text):,} characters; a Pipeline manifest may have at most {MAX_MANIFEST_BYTES:,}"
        raise SpecError([Issue("", message)], source=source_name)
    if _JSON_START.match(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            raise SpecError([Issue("", message)], source=source_name) from None
    try:
        return _load_yaml(text)
    except RecursionError:
        raise SpecError([Issue("", _TOO_DEEP)], source=source_name) from None
    except _ExpansionError as exc:
        raise SpecError([Issue("", str(exc))], source=source_name) from None
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
    except RecursionError:
        raise SpecError([Issue("", _TOO_DEEP)], source=source_name) from None


def load_manifest(text: str, *, source_name: str = "<manifest>") -> Pipeline:
    """Parse and validate one Pipeline manifest written in YAML or JSON."""
    return parse_pipeline(_decode(text, source_name), source_name=source_name)


def load_manifest_file(path: str | os.PathLike[str]) -> Pipeline:
    """Read, parse and validate a manifest file."""
    try:
        size = Path(path).stat().st_size
        if size > 4 * MAX_MANIFEST_BYTES:  # UTF-8: up to 4 bytes a character; `_decode` counts exactly
            message = f"the file is {size:,} bytes; a Pipeline manifest may have at most {MAX_MANIFEST_BYTES:,} characters"
            raise SpecError([Issue("", message)], source=str(path))
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
