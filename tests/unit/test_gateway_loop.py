"""``runtime.event_loop``: which asyncio loop Twisted and aiortc share (gateway/loop.py).

The choice is resolved in-process with uvloop importable or made unimportable
(``sys.modules["uvloop"] = None`` makes ``import uvloop`` raise, as on a machine
without the wheel).  Installing the reactor is process-global, so that part runs in
a child interpreter (tests/unit/test_gateway_loop_process.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.config import ConfigError, load_config
from gateway.loop import (
    EVENT_LOOP_CHOICES,
    EventLoopUnavailable,
    loop_kind,
    new_event_loop,
    resolve_event_loop,
    uvloop_import_error,
)
from tests.unit.test_config_load import errors, write

BASE = 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without uvloop: ``import uvloop`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def test_uvloop_is_installed_here() -> None:
    # A runtime dependency now (setup.cfg install_requires): the gateway's default is uvloop.
    assert uvloop_import_error() is None


def test_auto_takes_uvloop_when_it_imports() -> None:
    with capture_logs() as logs:
        assert resolve_event_loop("auto") == "uvloop"
    assert not [e for e in logs if e["event"] == "gateway.loop.uvloop_missing"]


def test_auto_falls_back_to_asyncio_with_a_warning(no_uvloop: None) -> None:
    assert uvloop_import_error() is not None
    with capture_logs() as logs:
        assert resolve_event_loop("auto") == "asyncio"
    warned = [e for e in logs if e["event"] == "gateway.loop.uvloop_missing"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning", logs
    assert warned[0]["event_loop"] == "asyncio" and warned[0]["reason"]


def test_explicit_asyncio_never_looks_for_uvloop(no_uvloop: None) -> None:
    with capture_logs() as logs:
        assert resolve_event_loop("asyncio") == "asyncio"
    assert logs == []


def test_explicit_asyncio_with_uvloop_installed_is_still_asyncio() -> None:
    assert resolve_event_loop("asyncio") == "asyncio"


def test_explicit_uvloop_missing_is_a_typed_error(no_uvloop: None) -> None:
    with pytest.raises(EventLoopUnavailable) as err:
        resolve_event_loop("uvloop")
    assert "runtime.event_loop" in str(err.value) and err.value.reason


def test_explicit_uvloop_present() -> None:
    assert resolve_event_loop("uvloop") == "uvloop"


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(ValueError):
        resolve_event_loop("trio")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_new_event_loop_is_of_the_kind_asked(kind: str) -> None:
    loop = new_event_loop(kind)  # type: ignore[arg-type]
    try:
        assert loop_kind(loop) == kind
        assert loop.run_until_complete(_answer()) == 42  # it runs coroutines
    finally:
        loop.close()


async def _answer() -> int:
    return 42


# --- the configuration key ----------------------------------------------------------------


def test_config_default_is_auto(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).runtime.event_loop == "auto"


@pytest.mark.parametrize("choice", EVENT_LOOP_CHOICES)
def test_config_accepts_each_choice(tmp_path: Path, choice: str) -> None:
    cfg = load_config(write(tmp_path, BASE + f"runtime: {{event_loop: {choice}}}\n"))
    assert cfg.runtime.event_loop == choice


def test_config_uvloop_missing_is_a_config_error_at_its_line(tmp_path: Path, no_uvloop: None) -> None:
    errs = errors(write(tmp_path, BASE + "runtime:\n  event_loop: uvloop\n"))
    assert len(errs) == 1, errs
    assert ":4:" in errs[0] and "runtime.event_loop" in errs[0] and "uvloop cannot be imported" in errs[0]


def test_config_auto_and_asyncio_load_without_uvloop(tmp_path: Path, no_uvloop: None) -> None:
    for choice in ("auto", "asyncio"):
        cfg = load_config(write(tmp_path, BASE + f"runtime: {{event_loop: {choice}}}\n"))
        assert cfg.runtime.event_loop == choice


def test_config_unknown_key_under_runtime_is_refused(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, BASE + "runtime: {eventloop: uvloop}\n"))
    assert any("eventloop" in e for e in errs), errs


@given(st.text(max_size=20) | st.integers() | st.booleans() | st.none())
def test_config_any_other_value_is_a_config_error(value: object) -> None:
    import tempfile

    import yaml

    if value in EVENT_LOOP_CHOICES:
        return
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), BASE + "runtime: " + yaml.safe_dump({"event_loop": value},
                                                                   default_flow_style=True))
        with pytest.raises(ConfigError) as err:
            load_config(path)
    assert any("event_loop" in m for m in err.value.messages), err.value.messages
