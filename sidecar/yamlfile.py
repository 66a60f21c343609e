"""YAML read as plain data, for the configuration and the users file: safe types only, a key written
twice refused, and every mapping and list remembering the lines it was written on.

:class:`MarkedDict` and :class:`MarkedList` are a ``dict`` and a ``list`` that also carry 1-based
line numbers, so a problem can be reported where the operator wrote it. Plain dicts and lists work
wherever these do (``parse_config`` then reports no lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml


class MarkedDict(dict[Any, Any]):
    """A mapping with ``line`` (where it starts) and ``lines[key]`` (where each key is written)."""

    line: int | None = None
    lines: dict[Any, int]

    def __init__(self) -> None:
        super().__init__()
        self.lines = {}


class MarkedList(list[Any]):
    """A list with ``line`` (where it starts) and ``lines[i]`` (where each item is written)."""

    line: int | None = None
    lines: list[int]

    def __init__(self) -> None:
        super().__init__()
        self.lines = []


def line_of(data: object, key: object = None) -> int | None:
    """The line of ``key`` in a marked mapping or list, else the line it starts on; None if unknown."""
    if isinstance(data, MarkedDict):
        try:
            return data.lines.get(key, data.line)
        except TypeError:  # an unhashable key
            return data.line
    if isinstance(data, MarkedList):
        return data.lines[key] if isinstance(key, int) and 0 <= key < len(data.lines) else data.line
    return None


MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (the last would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE:
                continue  # "<<: *defaults": merged keys may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_marked_map(self, node: yaml.MappingNode) -> Iterator[MarkedDict]:
        data = MarkedDict()
        data.line = node.start_mark.line + 1
        yield data
        data.update(self.construct_mapping(node))
        for key_node, _ in node.value:  # after construct_mapping has merged any "<<" keys in
            try:
                data.lines[self.construct_object(key_node)] = key_node.start_mark.line + 1
            except TypeError:
                pass

    def construct_marked_seq(self, node: yaml.SequenceNode) -> Iterator[MarkedList]:
        data = MarkedList()
        data.line = node.start_mark.line + 1
        yield data
        data.extend(self.construct_sequence(node))
        data.lines = [item.start_mark.line + 1 for item in node.value]


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_marked_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_marked_seq)


def load_yaml(text: str) -> Any:
    """A YAML document as plain (marked) data, refusing duplicate keys; yaml.YAMLError when it is not YAML."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
