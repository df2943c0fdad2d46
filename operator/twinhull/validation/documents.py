"""Read multi-document YAML manifests, remembering the line of every field.

Effects: reads files (:func:`read_paths`); :func:`parse_text` is pure.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from twinhull.errors import ManifestError

try:  # libyaml's parser is ~10x faster; fall back to the pure-Python one
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path_ = tuple[str | int, ...]

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    """One YAML document of a file; knows the 1-based line of each field path."""

    file: str
    line: int
    """Line where the document starts."""
    data: Any
    node: Node | None = field(default=None, repr=False, compare=False)
    """The composed YAML node, indexed for lines only when a problem must be located."""

    @cached_property
    def _lines(self) -> dict[Path_, int]:
        lines: dict[Path_, int] = {}
        if self.node is not None:
            _index_lines(self.node, (), lines)
        return lines

    def line_of(self, path: Iterable[str | int]) -> int:
        """Line of the deepest existing prefix of ``path``. Pure."""
        key = tuple(path)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return self.line


def _index_lines(node: Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                child = (*path, key_node.value)
                out[child] = key_node.start_mark.line + 1
                _index_lines(value_node, child, out)
                out[child] = key_node.start_mark.line + 1
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


_SCALARS = {
    "tag:yaml.org,2002:str": lambda c, n: n.value,
    "tag:yaml.org,2002:null": lambda c, n: None,
    "tag:yaml.org,2002:bool": SafeConstructor.construct_yaml_bool,
    "tag:yaml.org,2002:int": SafeConstructor.construct_yaml_int,
    "tag:yaml.org,2002:float": SafeConstructor.construct_yaml_float,
}


class _Unusual(Exception):
    """A node the fast path does not build (anchors shared, merge keys, other tags)."""


def _build(node: Node, constructor: SafeConstructor) -> Any:
    """Build plain data from a composed node, as PyYAML's safe loader would. The common
    tags are built directly (the safe constructor's bookkeeping for anchors and merge
    keys costs more than the parse); anything else raises :class:`_Unusual`."""
    if isinstance(node, ScalarNode):
        build = _SCALARS.get(node.tag)
        if build is None:
            raise _Unusual(node.tag)
        return build(constructor, node)
    if isinstance(node, SequenceNode) and node.tag == "tag:yaml.org,2002:seq":
        return [_build(item, constructor) for item in node.value]
    if isinstance(node, MappingNode) and node.tag == "tag:yaml.org,2002:map":
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise _Unusual(key_node.tag)
            out[_build(key_node, constructor)] = _build(value_node, constructor)
        return out
    raise _Unusual(node.tag)


_FAST = SafeConstructor()


def parse_text(text: str, *, file: str) -> list[Document]:
    """Parse multi-document YAML into documents with line maps. Pure.

    Raises :class:`ManifestError` with ``file:line`` for text that is not YAML.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{where}: not valid YAML: {problem}") from exc
    documents = []
    for node in nodes:
        if node is None:
            continue
        try:
            try:
                data = _build(node, _FAST)
            except _Unusual:
                data = SafeConstructor().construct_document(node)
        except (yaml.YAMLError, TypeError, ValueError, RecursionError) as exc:
            raise ManifestError(
                f"{file}:{node.start_mark.line + 1}: cannot read this YAML document: {exc}"
            ) from exc
        documents.append(Document(file=file, line=node.start_mark.line + 1, data=data,
                                  node=node))
    return documents


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if str(path) != "-" and path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        else:
            yield path


def read_paths(paths: Iterable[Path]) -> list[Document]:
    """Read files and directories (recursively, ``*.yaml|*.yml|*.json``) into documents;
    ``-`` reads standard input (e.g. ``kustomize build | twinhull validate -``).

    Effects: reads files. Raises :class:`ManifestError` for a missing or unreadable file.
    """
    documents: list[Document] = []
    for path in _expand(paths):
        if str(path) == "-":
            documents += parse_text(sys.stdin.read(), file="<stdin>")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ManifestError(f"{path}: no such file or directory") from exc
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text") from exc
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc
        documents += parse_text(text, file=str(path))
    return documents
