"""Reading YAML for manifests: bounded, strict and located.

PyYAML's own loaders expand aliases eagerly, keep the last of duplicate keys and
follow YAML 1.1 (where `no` is false and `2024-01-01` a date). This reader composes
the node graph with a depth limit, then converts it itself under YAML 1.2 core
rules, counting every node it expands (so an alias bomb stops at a fixed budget),
refusing duplicate keys, and recording where each key and value stands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from orchestrator.manifest.diagnostics import Diagnostic, DocPath, ManifestError, format_path

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 50_000

_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


@dataclass(frozen=True, slots=True)
class Location:
    """A line and column, both counted from 1."""

    line: int
    column: int


@dataclass(slots=True)
class LocatedDocument:
    """Plain Python data from one YAML document, with where each part was written."""

    data: Any
    file: str
    values: dict[DocPath, Location] = field(default_factory=dict)
    keys: dict[DocPath, Location] = field(default_factory=dict)

    def locate(self, path: DocPath, *, key: bool = False) -> Location:
        """The nearest recorded place for `path` (the key itself when `key` is true)."""
        if key and path in self.keys:
            return self.keys[path]
        probe = path
        while probe:
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), Location(1, 1))

    def diagnostic(
        self,
        path: DocPath,
        message: str,
        *,
        hint: str | None = None,
        key: bool = False,
        severity: str = "error",
    ) -> Diagnostic:
        """A diagnostic located at `path` in this document."""
        where = self.locate(path, key=key)
        return Diagnostic(
            file=self.file,
            line=where.line,
            column=where.column,
            path=format_path(path),
            message=message,
            hint=hint,
            severity="warning" if severity == "warning" else "error",
        )


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, Resolver):
    """PyYAML's pure-Python pipeline with a nesting limit on the composer, so deep
    input cannot exhaust the stack."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def read_text(path: str) -> str:
    """The text of a manifest file, refusing huge and non-UTF-8 files before parsing."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ManifestError(
            [Diagnostic(path, 1, 1, "", f"cannot read the file: {exc.strerror or exc}")]
        ) from exc
    if len(raw) > MAX_BYTES:
        raise ManifestError(
            [
                Diagnostic(
                    path,
                    1,
                    1,
                    "",
                    f"the file is larger than {MAX_BYTES // 1024} KiB; a manifest is much smaller",
                    hint="check that this is the manifest you meant",
                )
            ]
        )
    return decode(raw, path)


def decode(raw: bytes, file: str) -> str:
    """UTF-8 text from bytes, or a located error at the first undecodable byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(
            [
                Diagnostic(
                    file,
                    line,
                    column,
                    "",
                    "the file is not UTF-8 text",
                    hint="manifests are YAML documents saved as UTF-8",
                )
            ]
        ) from exc


def parse(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document into located plain data; raises ManifestError."""
    if len(text) > MAX_BYTES:
        raise ManifestError(
            [Diagnostic(file, 1, 1, "", f"the document is larger than {MAX_BYTES // 1024} KiB")]
        )
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ManifestError(
            [
                Diagnostic(
                    file,
                    line,
                    column,
                    "",
                    f"the file holds a control character (#x{exc.character:04x}), not YAML text",
                    hint="is this a binary file?",
                )
            ]
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        if "expected a single document" in str(exc):
            problem = "found more than one YAML document; a manifest is a single document"
        raise ManifestError([Diagnostic(file, line, column, "", f"YAML: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ManifestError([Diagnostic(file, 1, 1, "", f"YAML: {exc}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    document = LocatedDocument(data=None, file=file)
    if root is None:
        raise ManifestError(
            [
                Diagnostic(
                    file,
                    1,
                    1,
                    "",
                    "the manifest is empty",
                    hint="start with `deployment:` and a `type` (single-device, distributed-edge)",
                )
            ]
        )
    assert loader is not None
    converter = _Converter(document, loader)
    document.data = converter.convert(root, ())
    if converter.problems:
        raise ManifestError(converter.problems)
    return document


def _location(node: Node) -> Location:
    return Location(node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    """Turns a composed node graph into plain data, recording locations as it goes."""

    def __init__(self, document: LocatedDocument, resolver: Resolver) -> None:
        self.document = document
        self.resolver = resolver
        self.expanded = 0
        self.problems: list[Diagnostic] = []
        self._active: set[int] = set()

    def _fail(self, node: Node, path: DocPath, message: str, hint: str | None = None) -> None:
        where = _location(node)
        self.problems.append(
            Diagnostic(
                self.document.file, where.line, where.column, format_path(path), message, hint
            )
        )

    def convert(self, node: Node, path: DocPath) -> Any:
        self.expanded += 1
        if self.expanded > MAX_NODES:
            # Raised, not collected: past this point the graph may be an alias bomb.
            self._fail(
                node,
                path,
                f"the document expands to more than {MAX_NODES} values",
                hint="aliases (*name) that repeat large anchors multiply; write the values out",
            )
            raise ManifestError(self.problems)
        self.document.values.setdefault(path, _location(node))
        if id(node) in self._active:
            self._fail(node, path, "an alias refers to its own anchor (a cycle)")
            return None
        if node.tag not in _STANDARD_TAGS and self._explicit(node):
            self._fail(node, path, f"unsupported YAML tag `{node.tag}`", hint="remove the tag")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, ScalarNode)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _explicit(self, node: Node) -> bool:
        """Whether the node's tag was written in the document rather than inferred."""
        if isinstance(node, ScalarNode):
            implicit = (node.style is None, node.style is not None)
            inferred = self.resolver.resolve(ScalarNode, node.value, implicit)  # type: ignore[no-untyped-call]
            return bool(node.tag != inferred)
        return node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")

    def _mapping(self, node: MappingNode, path: DocPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._fail(
                    key_node,
                    path,
                    "merge keys (`<<`) are not supported",
                    hint="write the keys out; manifests stay readable without merges",
                )
                continue
            if not isinstance(key_node, ScalarNode):
                self._fail(key_node, path, "a key must be a plain name, not a list or mapping")
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                key = key_node.value
            child = (*path, key)
            if key in first_seen:
                first = _location(first_seen[key])
                self._fail(
                    key_node,
                    child,
                    f"duplicate key `{key}` (first written at line {first.line})",
                    hint="a key may appear once per mapping; merge the two entries",
                )
                continue
            first_seen[key] = key_node
            self.document.keys[child] = _location(key_node)
            result[key] = self.convert(value_node, child)
        return result

    def _scalar(self, node: ScalarNode, path: DocPath) -> Any:
        value: str = node.value
        explicit = self._explicit(node)
        if node.style is not None and not explicit:
            return value  # quoted or block scalar: always a string
        tag = node.tag if explicit else None
        if tag == "tag:yaml.org,2002:str":
            return value
        # YAML 1.2 core schema for plain scalars (no yes/no booleans, no dates).
        if tag in (None, "tag:yaml.org,2002:null") and value in ("", "~", "null", "Null", "NULL"):
            return None
        if tag in (None, "tag:yaml.org,2002:bool"):
            if value in ("true", "True", "TRUE"):
                return True
            if value in ("false", "False", "FALSE"):
                return False
        if tag in (None, "tag:yaml.org,2002:int") and _INT_RE.fullmatch(value):
            try:
                return int(value, 0) if value[:2] in ("0o", "0x") else int(value)
            except ValueError:  # more digits than Python converts; keep the text
                return value
        if tag in (None, "tag:yaml.org,2002:float"):
            if _FLOAT_RE.fullmatch(value):
                return float(value)
            lowered = value.lower()
            if lowered in (".inf", "+.inf"):
                return math.inf
            if lowered == "-.inf":
                return -math.inf
            if lowered == ".nan":
                return math.nan
        if tag is not None:
            self._fail(node, path, f"`{value}` cannot be read as {tag.rsplit(':', 1)[-1]}")
            return None
        return value
