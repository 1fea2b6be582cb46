"""The gateway's own userInputIndication (H.323 section 10.5): DTMF toward an H.323 participant,
``signal`` when the peer's TCS lists ``dtmf``, else ``alphanumeric``; a receiving session reads
back exactly the key sent."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import h245
from h323.h245_session import DtmfReceived, H245Session
from tests.unit.test_h323_h245_session import events, feed, sent


def session_after_tcs(user_input: tuple[str, ...] | None) -> H245Session:
    s = H245Session(rng=random.Random(3), open_channels=False)
    s.start(0.0)
    sent(s)
    if user_input is not None:
        feed(s, 0.1, h245.TerminalCapabilitySet(7, h245.audio_capabilities(user_input=user_input)))
        sent(s)
    return s


@pytest.mark.parametrize(("user_input", "form"), [
    (("basicString", "dtmf"), "signal"), (("dtmf",), "signal"),
    (("basicString",), "alphanumeric"), ((), "alphanumeric"), (None, "alphanumeric")])
def test_form_follows_the_peers_user_input_capabilities(user_input: tuple[str, ...] | None, form: str) -> None:
    s = session_after_tcs(user_input)
    assert s.send_user_input("5", 160) == form
    (uii,) = sent(s)
    assert isinstance(uii, h245.UserInputIndication)
    if form == "signal":
        assert (uii.signal, uii.duration, uii.alphanumeric) == ("5", 160, None)
    else:
        assert (uii.alphanumeric, uii.signal) == ("5", None)


@given(key=st.sampled_from("0123456789*#ABCDabcd"), dtmf=st.booleans(),
       duration=st.one_of(st.none(), st.integers(1, 60000)))
@settings(max_examples=60, deadline=None)
def test_a_receiving_session_reads_back_the_key(key: str, dtmf: bool, duration: int | None) -> None:
    tx = session_after_tcs(("dtmf",) if dtmf else ("basicString",))
    tx.send_user_input(key, duration)
    rx = session_after_tcs(None)
    events(rx)
    for pdu in tx.pdus_to_send():
        rx.receive_pdu(pdu, 1.0)
    got = [e for e in events(rx) if isinstance(e, DtmfReceived)]
    assert [e.digit for e in got] == [key.upper()]


def test_refuses_non_keys_and_sends_nothing_once_ended() -> None:
    s = session_after_tcs(("dtmf",))
    for bad in ("", "12", "x", "!"):
        with pytest.raises(ValueError):
            s.send_user_input(bad)
    s.end_session()
    sent(s)
    assert s.send_user_input("1") is None and sent(s) == []
