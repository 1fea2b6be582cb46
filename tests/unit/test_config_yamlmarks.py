"""The marked YAML loader: marks per key/value, duplicate keys refused, YAML 1.2 scalars,
syntax errors as FILE:LINE:COL, and nothing but YamlError on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from gateway.yamlmarks import (
    Issue,
    Mark,
    YamlError,
    format_path,
    load_file,
    loads,
    validate,
)


def test_marks_for_keys_and_values() -> None:
    doc = loads("a:\n  b: [x, y]\n  c: 3\n", "f.yaml")
    assert doc.data == {"a": {"b": ["x", "y"], "c": 3}}
    assert doc.key_marks[("a", "c")] == Mark(3, 3)
    assert doc.value_marks[("a", "c")] == Mark(3, 6)
    assert doc.value_marks[("a", "b", 1)] == Mark(2, 10)


def test_missing_path_falls_back_to_nearest_ancestor() -> None:
    doc = loads("a:\n  b: 1\n", "f.yaml")
    assert doc.mark(("a", "zzz")) == doc.value_marks[("a",)]


@pytest.mark.parametrize("word", ["off", "on", "yes", "no", "y", "n", "Off", "NO"])
def test_yaml11_boolean_words_stay_text(word: str) -> None:
    assert loads(f"v: {word}\n").data == {"v": word}


@pytest.mark.parametrize("text,value", [
    ("true", True), ("False", False), ("null", None), ("~", None), ("", None),
    ("12", 12), ("-3", -3), ("0o17", 15), ("0x1f", 31), ("1.5", 1.5),
    ("0100", 100),           # YAML 1.2 decimal, not 1.1 octal 64
    ("1_000", "1_000"),      # no 1.1 underscores
    ("1:30", "1:30"),        # no 1.1 sexagesimal
    ("'off'", "off"), ('"12"', "12"), ("!!str 12", "12"), ("!!int '7'", 7),
])
def test_scalars_resolve_by_yaml_1_2_core_schema(text: str, value: object) -> None:
    assert loads(f"v: {text}\n").data == {"v": value}


def test_keys_are_kept_as_written() -> None:
    doc = loads("1001: a\n0100: b\ntrue: c\n")
    assert doc.data == {"1001": "a", "0100": "b", "true": "c"}


def test_duplicate_key_refused_with_both_lines() -> None:
    with pytest.raises(YamlError) as err:
        loads("a: 1\nb:\n  c: 1\n  c: 2\n", "d.yaml")
    assert str(err.value) == "d.yaml:4:3: duplicate key c (first defined at line 3)"


def test_quoted_and_unquoted_numeric_keys_are_the_same_key() -> None:
    with pytest.raises(YamlError, match=r'duplicate key "1001"'):
        loads('1001: a\n"1001": b\n')


def test_wrong_indentation_reports_file_and_line() -> None:
    with pytest.raises(YamlError) as err:
        loads("a:\n  b: 1\n c: 2\n", "ind.yaml")
    issue = err.value.issue
    assert (issue.file, issue.line) == ("ind.yaml", 3)
    assert "indentation" in issue.message
    assert str(err.value).startswith("ind.yaml:3:")


def test_tab_indentation_reported() -> None:
    with pytest.raises(YamlError) as err:
        loads("a:\n\t- 1\n", "tab.yaml")
    assert err.value.issue.line == 2


@pytest.mark.parametrize("text,line,fragment", [
    ("a: &x 1\nb: *x\n", 2, "aliases"),
    ("a: 1\n---\nb: 2\n", 2, "one YAML document"),
    ("a: !custom x\n", 1, "unsupported tag"),
    ("? [1]\n: 2\n", 1, "keys must be plain text"),
    ("<<: {a: 1}\n", 1, "merge keys"),
    ("a: 1\nb: \x07\n", 2, "unacceptable character"),
    ("x: !!int abc\n", 1, "not an integer"),
])
def test_refused_constructs(text: str, line: int, fragment: str) -> None:
    with pytest.raises(YamlError) as err:
        loads(text, "r.yaml")
    assert err.value.issue.line == line
    assert fragment in err.value.issue.message


def test_deep_nesting_refused_not_crashing() -> None:
    with pytest.raises(YamlError, match="nesting"):
        loads("[" * 100 + "]" * 100)
    with pytest.raises(YamlError):
        loads("[" * 50000)


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(YamlError) as err:
        load_file(f, display="bad.yaml")
    assert (err.value.issue.line, err.value.issue.col) == (2, 4)


def test_missing_file_is_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_file(tmp_path / "nope.yaml")


def test_format_path() -> None:
    assert format_path(("meetings", "1001", "legacy_media")) == 'meetings."1001".legacy_media'
    assert format_path(("defaults", "protocols", 1)) == "defaults.protocols[1]"


class _M(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    mode: Literal["on", "off"]
    n: int = 0


def test_validate_maps_errors_to_marks() -> None:
    doc = loads("mode: of\nn: '3'\nextra: 1\n", "v.yaml")
    model, issues = validate(_M, doc)
    assert model is None
    assert [str(i) for i in issues] == [
        "v.yaml:1:7: mode: 'of' is not one of on, off",
        "v.yaml:2:4: n: expected a whole number, got text '3'",
        "v.yaml:3:1: extra: unknown key (expected one of: mode, n)",
    ]


def test_validate_off_is_the_word_off() -> None:
    model, issues = validate(_M, loads("mode: off\n"))
    assert issues == [] and model is not None and model.mode == "off"


def test_validate_top_level_must_be_mapping() -> None:
    _, issues = validate(_M, loads("", "e.yaml"))
    assert issues == [Issue("e.yaml", 1, 1, "expected a mapping at the top level, the file is empty")]
