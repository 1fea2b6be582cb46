"""Issue 7: the meeting page shows each participant's encryption state.

Headless Chromium joins ``/m/<meeting>``; a plain pjsua caller and an SDES-SRTP one
(``srtp=mandatory``) dial the same meeting. The page's roster (``GET /m/<meeting>/participants``,
fed by the gateway's WHIP ``?leg=sip&enc=...``) must show a lock ("encrypted end to end to the
gateway") for the browser and the SRTP caller, and a warning ("this room system's media is not
encrypted before the gateway") for the plain caller -- as text a person reads, not only as data.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from pathlib import Path

import pytest

from tests.support.audio import tone, write_wav
from tests.support.chromium import CHROMIUM, chromium_available, launch_chromium
from tests.support.pjsua import run_pjsua_call

pytestmark = pytest.mark.interop

MEETING = "4343"
CALL_SECONDS = 20.0
ENCRYPTED = "encrypted end to end to the gateway"
PLAIN = "this room system's media is not encrypted before the gateway"
PSEUDONYM = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+ \d{4}")


def _rows(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#participants li')].map((li) => ({
        text: li.textContent, cls: li.className, leg: li.dataset.leg, encryption: li.dataset.encryption,
        visible: li.getBoundingClientRect().height > 0,
    }))""")


def test_page_shows_lock_or_warning_per_participant(gateway_factory, tmp_path: Path) -> None:
    assert chromium_available(), f"Chromium not found at {CHROMIUM} (make test installs Debian's chromium)"
    gw = gateway_factory()
    mic = write_wav(tmp_path / "mic.wav", tone(440, 2.0, rate=48000), rate=48000)
    wav = write_wav(tmp_path / "caller.wav", tone(1000, 2.0))
    with launch_chromium(fake_audio_wav=mic) as browser, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        page = browser.new_page()
        page.goto(gw.page_url(MEETING))
        page.wait_for_function("() => window.roomgate && window.roomgate.state === 'connected'", timeout=45_000)
        plain = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", play_wav=wav,
                            seconds=CALL_SECONDS, timeout=30.0)
        srtp = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", play_wav=wav,
                           seconds=CALL_SECONDS, timeout=30.0, srtp="mandatory")
        try:
            deadline = time.monotonic() + 40
            rows: list[dict] = []
            while time.monotonic() < deadline:
                rows = _rows(page)
                if sorted(r["encryption"] for r in rows) == ["dtls-srtp", "plain", "sdes-srtp"]:
                    break
                page.wait_for_timeout(250)
            shot = tmp_path / "meeting_page_encryption.png"
            page.screenshot(path=str(shot), full_page=True)
            print("screenshot", shot)
            _, raw = gw.get(f"/m/{MEETING}/participants")
        finally:
            results = [plain.result(timeout=CALL_SECONDS + 60), srtp.result(timeout=CALL_SECONDS + 60)]

    print("rows", rows)
    assert all(r.connected for r in results), [(r.final_status, r.error) for r in results]
    by_enc = {r["encryption"]: r for r in rows}
    assert sorted(by_enc) == ["dtls-srtp", "plain", "sdes-srtp"], rows
    assert all(r["visible"] for r in rows)
    browser_row, plain_row, srtp_row = by_enc["dtls-srtp"], by_enc["plain"], by_enc["sdes-srtp"]
    assert browser_row["leg"] == "webrtc" and ENCRYPTED in browser_row["text"] and "enc-ok" in browser_row["cls"]
    assert srtp_row["leg"] == "sip" and ENCRYPTED in srtp_row["text"] and "enc-ok" in srtp_row["cls"]
    assert plain_row["leg"] == "sip" and PLAIN in plain_row["text"] and "enc-plain" in plain_row["cls"]
    assert PLAIN not in srtp_row["text"] and ENCRYPTED not in plain_row["text"]
    # Room systems appear under pseudonyms; the roster holds no addresses and no core ids.
    for row in (plain_row, srtp_row):
        assert PSEUDONYM.search(row["text"]), row["text"]
    body = json.loads(raw)
    text = json.dumps(body)
    assert "127.0.0.1" not in text and "pjsua" not in text.lower()
    assert all(set(p) == {"name", "leg", "encryption", "encrypted_to_gateway"} for p in body["participants"])
