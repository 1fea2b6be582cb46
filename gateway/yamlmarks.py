"""YAML with line/column marks, no duplicate keys, YAML 1.2 scalars, and pydantic errors mapped back.

Why not ``yaml.safe_load``: it forgets where each value came from (so a schema
error cannot say ``policy.yaml:7:19``), it silently keeps the last of two equal
keys, and it follows YAML 1.1, where ``off``, ``no``, ``y`` become booleans and
``0100`` becomes the octal number 64.  An operator who writes
``legacy_media: off`` or a meeting id ``0100`` deserves either what they wrote
or a clear error, never a quiet conversion.

What this loader does instead:

* composes the document with PyYAML (safe: no tags are constructed by PyYAML),
  then builds plain Python values itself, recording the mark of every key and
  value under its path (``("meetings", "1001", "legacy_media")``);
* resolves plain scalars by the YAML 1.2 core schema: only ``true``/``false``
  are booleans, only ``null``/``~``/empty are null, integers are decimal,
  ``0o`` octal or ``0x`` hex; ``yes/no/on/off/y/n`` stay strings;
* takes every mapping key as the text written in the file (``1001:`` and
  ``"1001":`` both give the key ``"1001"``, ``0100:`` gives ``"0100"``), and
  refuses a key that appears twice in one mapping;
* refuses anchors/aliases and merge keys (``<<``): configuration here is small,
  and aliases are the door to "billion laughs" documents and recursive data;
* refuses more than one document per file and tags other than the core ones.

``validate`` runs a pydantic model over the loaded data and turns each
pydantic error into an :class:`Issue` at the mark of the offending key or value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: A path into the loaded document: mapping keys (str) and sequence indexes (int).
YamlPath = tuple[str | int, ...]

#: Deeper nesting than this is refused (our files are three levels deep; this
#: keeps hostile input away from Python's recursion limit).
MAX_DEPTH = 64


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in one file, at a 1-based line and column; ``str()`` is ``FILE:LINE:COL: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class YamlError(Exception):
    """The text is not a YAML document we accept (syntax, duplicate key, alias, ...)."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue


@dataclass(frozen=True)
class Mark:
    """Where something starts in the file, 1-based."""

    line: int
    col: int


@dataclass(frozen=True)
class Loaded:
    """A loaded document: plain data plus the marks of every key and value by path."""

    file: str
    data: Any
    value_marks: Mapping[YamlPath, Mark] = field(default_factory=dict)
    key_marks: Mapping[YamlPath, Mark] = field(default_factory=dict)

    def mark(self, path: Iterable[str | int], *, prefer: Literal["key", "value"] = "value") -> Mark:
        """The mark for ``path``, or of its nearest ancestor present in the file (a missing key
        is reported at the mapping that should hold it)."""
        p = tuple(path)
        while True:
            first, second = (self.key_marks, self.value_marks) if prefer == "key" else (
                self.value_marks, self.key_marks)
            if p in first:
                return first[p]
            if p in second:
                return second[p]
            if not p:
                return Mark(1, 1)
            p = p[:-1]

    def issue(self, path: Iterable[str | int], message: str, *,
              prefer: Literal["key", "value"] = "value") -> Issue:
        """An :class:`Issue` for ``path`` whose message starts with the dotted path."""
        p = tuple(path)
        m = self.mark(p, prefer=prefer)
        shown = format_path(p)
        return Issue(self.file, m.line, m.col, f"{shown}: {message}" if shown else message)


_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(path: Iterable[str | int]) -> str:
    """``("meetings", "1001", "legacy_media")`` -> ``meetings."1001".legacy_media``;
    list indexes as ``protocols[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.match(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out += ("." if out else "") + text
    return out


# --- scalar resolution (YAML 1.2 core schema) --------------------------------------------

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")

#: Words YAML 1.1 (and so PyYAML) would turn into booleans; here they stay strings.
YAML11_BOOLEAN_WORDS = frozenset(
    ["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"])

_TAG = "tag:yaml.org,2002:"


def _resolve_plain(text: str) -> Any:
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.match(text):
        return int(text)
    if _INT8.match(text):
        return int(text, 0)
    if _INT16.match(text):
        return int(text, 0)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


#: Tag our resolver gives to untagged plain scalars (quoted ones get ``!!str``).
_PLAIN = "?plain"


class _NoAliasComposer(Composer):
    """Refuses aliases at the point they occur (so the error has a mark)."""

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):  # type: ignore[attr-defined]
            event = self.peek_event()  # type: ignore[attr-defined]
            raise yaml.MarkedYAMLError(
                problem=f"aliases (*{event.anchor}) are not supported; write the value out",
                problem_mark=event.start_mark)
        return super().compose_node(parent, index)


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,  # type: ignore[misc]
              _NoAliasComposer, yaml.resolver.BaseResolver):
    """Reader/scanner/parser/composer only: we construct values ourselves."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _NoAliasComposer.__init__(self)
        yaml.resolver.BaseResolver.__init__(self)

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        """Leave plain scalars unresolved (``_PLAIN``) so that we apply the YAML 1.2 core
        schema ourselves; quoted scalars are strings, collections maps and sequences."""
        if kind is ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[YamlPath, Mark] = {}
        self.keys: dict[YamlPath, Mark] = {}

    def fail(self, node: Node, message: str) -> YamlError:
        m = _mark(node)
        return YamlError(Issue(self.file, m.line, m.col, message))

    def build(self, node: Node, path: YamlPath) -> Any:
        if len(path) > MAX_DEPTH:
            raise self.fail(node, f"nesting deeper than {MAX_DEPTH} levels")
        self.values[path] = _mark(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            self.check_tag(node, "seq")
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self.check_tag(node, "map")
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.key(key_node)
                if key in out:
                    first = self.keys[(*path, key)]
                    raise self.fail(key_node, f"duplicate key {format_path((key,))!s} "
                                              f"(first defined at line {first.line})")
                self.keys[(*path, key)] = _mark(key_node)
                out[key] = self.build(value_node, (*path, key))
            return out
        raise self.fail(node, "unsupported YAML node")  # pragma: no cover - PyYAML has only three

    def check_tag(self, node: Node, kind: str) -> None:
        if node.tag not in (_TAG + kind,):
            raise self.fail(node, f"unsupported tag {node.tag}")

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, "mapping keys must be plain text, not lists or mappings")
        if node.value == "<<" and node.style is None:
            raise self.fail(node, "merge keys (<<) are not supported; write the keys out")
        if node.value == "":
            raise self.fail(node, "empty key")
        return str(node.value)

    def scalar(self, node: ScalarNode) -> Any:
        text: str = node.value
        tag = node.tag
        if tag == _PLAIN:  # untagged plain scalar: resolve by the YAML 1.2 core schema
            return _resolve_plain(text)
        # Explicit tag: only the core schema's.
        if tag == _TAG + "str":
            return text
        if tag == _TAG + "null":
            if not _NULL.match(text):
                raise self.fail(node, f"{text!r} is not a null")
            return None
        if tag == _TAG + "bool":
            if text not in _BOOL:
                raise self.fail(node, f"{text!r} is not a boolean (true or false)")
            return _BOOL[text]
        if tag == _TAG + "int":
            value = _resolve_plain(text)
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.fail(node, f"{text!r} is not an integer")
            return value
        if tag == _TAG + "float":
            value = _resolve_plain(text)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise self.fail(node, f"{text!r} is not a number")
            return float(value)
        raise self.fail(node, f"unsupported tag {tag}")


#: PyYAML's words for what is, nearly always, a mis-indented line.
_INDENT_SYMPTOMS = ("<block end>", "mapping values are not allowed", "could not find expected ':'",
                    "found character '\\t'")


def _syntax_issue(file: str, exc: yaml.YAMLError) -> Issue:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        reason = ", ".join(parts) or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None and \
                exc.context_mark.line != exc.problem_mark.line:
            reason = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
        if any(w in reason for w in _INDENT_SYMPTOMS):
            reason += "; check the indentation (spaces only, children indented under their key)"
        if mark is None:
            return Issue(file, 1, 1, reason)
        return Issue(file, mark.line + 1, mark.column + 1, reason)
    return Issue(file, 1, 1, str(exc) or "invalid YAML")


def loads(text: str, file: str = "<string>") -> Loaded:
    """Parse ``text`` (one YAML document) into plain data with marks; raises :class:`YamlError`."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.composer.ComposerError as exc:
        if exc.context and "single document" in exc.context:
            mark = exc.problem_mark
            raise YamlError(Issue(file, mark.line + 1 if mark else 1, 1,
                                  "only one YAML document per file (found a second '---')")) from None
        raise YamlError(_syntax_issue(file, exc)) from None
    except yaml.reader.ReaderError as exc:
        raise YamlError(_reader_issue(file, text, exc)) from None
    except yaml.YAMLError as exc:
        raise YamlError(_syntax_issue(file, exc)) from None
    except RecursionError:
        raise YamlError(Issue(file, 1, 1, "nesting too deep")) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return Loaded(file=file, data=None)
    builder = _Builder(file)
    data = builder.build(node, ())
    return Loaded(file=file, data=data, value_marks=builder.values, key_marks=builder.keys)


def _reader_issue(file: str, text: str, exc: yaml.reader.ReaderError) -> Issue:
    pos = exc.position if isinstance(exc.position, int) else 0
    before = text[:pos]
    line = before.count("\n") + 1
    col = pos - (before.rfind("\n") + 1) + 1
    char = exc.character
    what = f"#x{ord(char):04x}" if isinstance(char, str) else f"#x{char:04x}" if isinstance(char, int) else "?"
    return Issue(file, line, col, f"unacceptable character {what} ({exc.reason}); "
                                  "YAML files must be printable UTF-8 text")


def load_file(path: str | Path, display: str | None = None) -> Loaded:
    """Read and parse a file.  ``OSError`` (missing, unreadable) passes through so callers can
    tell "cannot read" from "bad content"; undecodable bytes are a :class:`YamlError`."""
    name = display if display is not None else str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise YamlError(Issue(name, line, col, "file is not UTF-8 text")) from None
    return loads(text, name)


# --- pydantic errors -> issues --------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def describe(value: Any) -> str:
    """A value as the user wrote it, for messages (strings quoted, None as null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _what(value: Any) -> str:
    """``text 'x'``, ``a number 5``, ``null``, ``a list``: what was found, for "expected" messages."""
    if value is None or isinstance(value, (dict, list)):
        return describe(value)
    return f"{_type_name(value)} {describe(value)}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the last element of ``loc`` (to list its allowed keys)."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(str(part))
            if f is None:
                return None
            current = f.annotation
        elif get_origin(current) in (dict, Mapping):
            current = get_args(current)[1]
        elif get_origin(current) in (list, tuple):
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip ``Optional``/``Annotated`` so we can walk into the model behind them."""
    for _ in range(5):
        args = get_args(tp)
        origin = get_origin(tp)
        if origin is None:
            return tp
        if origin in (dict, Mapping, list, tuple):
            return tp
        non_none = [a for a in args if a is not type(None)]
        if not non_none:
            return tp
        tp = non_none[0]
    return tp


def _error_message(err: Mapping[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        if not expected:
            expected = re.findall(r"\b(\w+)\b", str(err.get("ctx", {}).get("expected", "")))
        hint = ""
        if isinstance(value, bool):
            hint = " (write the value in quotes if you meant text)"
        return f"{describe(value)} is not one of {', '.join(expected)}{hint}"
    if kind == "extra_forbidden":
        holder = _model_at(model, loc)
        allowed = f" (expected one of: {', '.join(holder.model_fields)})" if holder else ""
        return f"unknown key{allowed}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_type":
        return f"expected text, got {_what(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_what(value)}"
    if kind == "bool_type":
        extra = " (YAML 1.2: only true/false are booleans)" if isinstance(value, str) and \
            value in YAML11_BOOLEAN_WORDS else ""
        return f"expected true or false, got {describe(value)}{extra}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {_what(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_what(value)}"
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def validate(model: type[M], loaded: Loaded, *, context: dict[str, Any] | None = None,
             ) -> tuple[M | None, list[Issue]]:
    """Validate ``loaded.data`` with ``model`` (strict); each pydantic error becomes an Issue at
    the mark of the key (unknown key) or value (everything else) it concerns."""
    if not isinstance(loaded.data, dict):
        what = "the file is empty" if loaded.data is None else f"got {_type_name(loaded.data)}"
        m = loaded.mark(())
        return None, [Issue(loaded.file, m.line, m.col, f"expected a mapping at the top level, {what}")]
    try:
        return model.model_validate(loaded.data, strict=True, context=context), []
    except ValidationError as exc:
        issues: list[Issue] = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            # Pydantic may name union members or validator functions in loc; keep the real path.
            path = _real_path(loaded, loc)
            prefer: Literal["key", "value"] = "key" if err["type"] in ("extra_forbidden",) else "value"
            issues.append(loaded.issue(path, _error_message(err, model, path), prefer=prefer))
        return None, sorted(set(issues))


def _real_path(loaded: Loaded, loc: tuple[Any, ...]) -> YamlPath:
    """Drop loc parts that are not keys/indexes in the data (pydantic's union-member tags)."""
    out: list[str | int] = []
    node: Any = loaded.data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            out.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        elif node is None and isinstance(part, str):
            out.append(part)  # a missing key under an absent mapping
        # else: a pydantic-internal segment; skip it
    return tuple(out)
