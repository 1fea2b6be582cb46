"""Property: whatever text load_policy is given, it returns a Policy or raises PolicyError
(never KeyError, TypeError, RecursionError, a YAML exception...), and every issue has a
sane position."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import Policy, PolicyError, load_policy, parse_policy

KEYS = ["version", "unknown_meetings", "defaults", "meetings", "legacy_media", "protocols",
        "1001", "1000", "x y", "<<", "?", "-"]
WORDS = ["1", "2", "off", "yes", "null", "~", "reject", "defaults", "allow-plain", "require-srtp",
         "[sip]", "[sip, h323]", "{}", "[]", "&a 1", "*a", "!!int x", "'q'", '"1001"', "\t", ":", "{", "["]

# YAML-ish lines: indentation, keys, separators, values, comments.
line = st.builds(
    lambda indent, key, sep, value, comment: " " * indent + key + sep + value + comment,
    st.integers(0, 6), st.sampled_from(KEYS + ["- "]), st.sampled_from([": ", ":", " ", ""]),
    st.sampled_from(WORDS + [""]), st.sampled_from(["", " # c"]),
)
yamlish = st.lists(line, max_size=12).map("\n".join)


def check(text: str) -> None:
    try:
        result = parse_policy(text, "h.yaml")
    except PolicyError as exc:
        assert exc.errors, "a PolicyError must carry at least one issue"
        for issue in exc.errors:
            assert issue.file == "h.yaml" and issue.line >= 1 and issue.col >= 1 and issue.message
    else:
        assert isinstance(result, Policy)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(yamlish)
def test_yamlish_input_only_raises_policy_error(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_policy_error(text: str) -> None:
    check(text)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=100))
def test_arbitrary_bytes_from_file(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "b.yaml"
    f.write_bytes(data)
    try:
        assert isinstance(load_policy(f), Policy)
    except PolicyError as exc:
        assert exc.errors
