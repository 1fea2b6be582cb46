"""atheris fuzz target for the SIP message parser (RFC 3261 section 7, 25).

Run: ``python tests/fuzz/fuzz_sip.py -max_total_time=600 [corpus_dir]``.
Property checked: :func:`sip.message.parse_message` either returns a message, which serialises
and re-parses to the same start line, or raises :class:`sip.message.SipParseError` -- never any
other exception.  Crashes found are kept in ``tests/vectors/sip/`` and replayed by
``tests/unit/test_fuzz_vectors.py``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import atheris

with atheris.instrument_imports():
    from sip.message import SipParseError, parse_message


def check(data: bytes) -> None:
    """Parse ``data``; only :class:`SipParseError` may escape, and a parsed message round-trips."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    again = parse_message(bytes(msg))
    assert type(again) is type(msg), (msg, again)


def main() -> None:
    """libFuzzer entry point."""
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
