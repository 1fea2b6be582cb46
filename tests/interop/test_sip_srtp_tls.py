"""SIP over TLS and SDES-SRTP on the legacy leg, end to end with a real pjsua2 (issue 3, first slice).

One gateway (``roomgate run``, with a UDP/TCP listener and a TLS listener on a fresh self-signed
certificate) serves the whole module; each test uses its own meeting id so its log events can be
told apart. Media is proven as in the walking skeleton (``call_with_webrtc_peer``: pjsua sends
1 kHz, an aiortc participant 440 Hz, each side's spectrum is measured), and tshark judges that an
SRTP call's legacy flow carries no plain PCMU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs import codec_by_name
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    call_with_webrtc_peer,
    run_on_private_loop,
)
from tests.support.audio import analyse, assert_tone, tone
from tests.support.gateway_process import (
    GatewayProcess,
    make_test_certificate,
    running_gateway,
)
from tests.support.pjsua import PjsuaResult, free_rtp_port, run_pjsua_call
from tests.support.tshark import TSHARK, capture, decode

pytestmark = pytest.mark.interop

POLICY = {
    "meetings": {
        "2001": {"legacy_media": "require-srtp"},
        "2002": {"legacy_media": "prefer-srtp"},
        "3000": {"signaling": "tls-required"},
    },
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("srtp-tls-gateway"), policy=POLICY, tls=True) as gateway:
        yield gateway


def admitted(gw: GatewayProcess, meeting: str) -> dict[str, Any]:
    found = gw.events("call.admitted", meeting=meeting)
    assert len(found) == 1, f"expected one call.admitted for meeting {meeting}: {found}"
    return found[0]


def closed(gw: GatewayProcess, meeting: str) -> dict[str, Any]:
    return gw.wait_for_event("bridge.session.closed", timeout=15, meeting=meeting)


def assert_two_way_tone(result: PjsuaResult, heard: Any) -> None:
    assert result.connected and result.final_status == 200, result
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    samples, rate = result.recording()
    spectrum = assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.5)
    assert spectrum.level_at(CALLER_HZ) < -30, "the caller hears its own tone back"


# transport, pjsua's SRTP mode, the legacy encryption the gateway must pick, meeting id
COMBINATIONS = [
    ("udp", "mandatory", "sdes-srtp", "1101"),  # RTP/SAVP + a=crypto
    ("udp", "optional", "sdes-srtp", "1102"),   # best effort: RTP/AVP + a=crypto, answered with SRTP
    ("tcp", "mandatory", "sdes-srtp", "1103"),
    ("tls", "off", "plain", "1104"),
    ("sips", "mandatory", "sdes-srtp", "1105"),  # sips: URI over TLS
]


@pytest.mark.parametrize(("transport", "srtp", "encryption", "meeting"), COMBINATIONS,
                         ids=[f"{t}-srtp-{s}" for t, s, _, _ in COMBINATIONS])
def test_tone_both_ways(gw: GatewayProcess, tmp_path: Path, transport: str, srtp: str,
                        encryption: str, meeting: str) -> None:
    result, heard = run_on_private_loop(call_with_webrtc_peer(
        gw, tmp_path, codec="PCMU", meeting=meeting, transport=transport, srtp=srtp, seconds=4.0))
    assert_two_way_tone(result, heard)

    event = admitted(gw, meeting)
    assert event["transport"] == ("tls" if transport == "sips" else transport), event
    assert event["legacy_encryption"] == encryption, event
    if encryption == "sdes-srtp":
        assert event["srtp_suite"] == "AES_CM_128_HMAC_SHA1_80", event
    done = closed(gw, meeting)
    assert done["legacy_encryption"] == encryption, done
    assert done["legacy_srtp_dropped"] == 0 and done["legacy_dropped"] == 0, done
    assert done["legacy_in"] > 100 and done["legacy_out"] > 100, done


def test_32_bit_tag_suite(gw: GatewayProcess, tmp_path: Path) -> None:
    """pjsua2 2.15.1 (bundled libsrtp) offers AES_CM_128_HMAC_SHA1_80/_32 and AES_256_CM_*; its
    build refuses the AEAD GCM suites (PJMEDIA_SRTP_ENOTSUPCRYPTO), so those are unit-tested."""
    result, heard = run_on_private_loop(call_with_webrtc_peer(
        gw, tmp_path, codec="PCMU", meeting="1200", srtp="mandatory",
        srtp_suite="AES_CM_128_HMAC_SHA1_32", seconds=4.0))
    assert_two_way_tone(result, heard)
    assert admitted(gw, "1200")["srtp_suite"] == "AES_CM_128_HMAC_SHA1_32"


def test_only_unsupported_suites_get_488_naming_the_suite(gw: GatewayProcess) -> None:
    result = run_pjsua_call(gw.sip_uri("1201"), codec="PCMU", seconds=1, timeout=20, srtp="mandatory",
                            srtp_suite="AES_256_CM_HMAC_SHA1_80")
    assert not result.connected and result.final_status == 488 and result.status_from_wire, result
    assert result.warning and "AES_256_CM_HMAC_SHA1_80" in result.warning, result.warning
    assert "not supported" in result.warning


def tone_share(pcm: np.ndarray, rate: int, hz: float, width: float = 30.0) -> float:
    """The share of the signal's energy within ``width`` Hz of ``hz`` (a pure tone: near 1;
    white noise: about ``2 * width / (rate / 2)``)."""
    x = np.asarray(pcm, dtype=np.float64)
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    power[freqs < 50] = 0
    return float(power[np.abs(freqs - hz) < width].sum() / power.sum())


def _payloads(rows: list[dict[str, str]], src_port: int, *, src: bool) -> list[bytes]:
    out = []
    for row in rows:
        if (int(row["udp.srcport"]) == src_port) == src and row["rtp.payload"]:
            out.append(bytes.fromhex(row["rtp.payload"].replace(":", "")))
    return out


def test_srtp_call_carries_no_plain_pcmu_on_the_wire(gw: GatewayProcess, tmp_path: Path) -> None:
    """tshark sees RTP headers on the legacy flow, but every packet is 10 bytes longer than plain
    PCMU (the HMAC-SHA1-80 tag) and the payloads, read as PCMU, are noise, not the tones."""
    assert Path(TSHARK).exists(), f"tshark not found at {TSHARK} (make test installs Debian's tshark)"
    rtp_port = free_rtp_port()
    pcap = tmp_path / "srtp.pcapng"
    with capture([rtp_port], pcap):
        result, heard = run_on_private_loop(call_with_webrtc_peer(
            gw, tmp_path, codec="PCMU", meeting="1300", srtp="mandatory", rtp_port=rtp_port, seconds=4.0))
    assert_two_way_tone(result, heard)

    rows = decode(pcap, f"udp.port == {rtp_port} && rtp.version == 2",
                  ["udp.srcport", "udp.length", "rtp.p_type", "rtp.payload"],
                  decode_as=[f"udp.port=={rtp_port},rtp"])
    rtp_rows = [r for r in rows if r["rtp.p_type"] == "0"]
    from_caller = _payloads(rtp_rows, rtp_port, src=True)
    to_caller = _payloads(rtp_rows, rtp_port, src=False)
    assert len(from_caller) > 100 and len(to_caller) > 100, (len(from_caller), len(to_caller))
    # 160 bytes of PCMU per 20 ms + a 10-byte authentication tag: SRTP, in both directions.
    lengths = {int(r["udp.length"]) - 8 - 12 for r in rtp_rows}
    assert lengths == {170}, f"RTP payload+tag lengths seen: {sorted(lengths)} (plain PCMU would be 160)"

    codec = codec_by_name("PCMU")
    pcmu = codec.decoder()
    for payloads, hz in ((from_caller, CALLER_HZ), (to_caller, BROWSER_HZ)):
        pcm = np.concatenate([pcmu.decode(p[:160]) for p in payloads[25:]])
        # Ciphertext read as mu-law is white noise: the tone's frequency does not stand out.
        assert abs(analyse(pcm, 8000).peak_hz - hz) > 50, f"the {hz} Hz tone is readable on the wire"
        assert tone_share(pcm, 8000, hz) < 0.1, f"{hz} Hz holds {tone_share(pcm, 8000, hz):.2f} of the energy"

    # The judge can fail: the same reading of a plain PCMU tone finds it at once.
    plain = codec.encoder().encode(tone(BROWSER_HZ, 2.0, rate=8000).astype(np.int16))
    reference = pcmu.decode(plain)
    assert abs(analyse(reference, 8000).peak_hz - BROWSER_HZ) < 10
    assert tone_share(reference, 8000, BROWSER_HZ) > 0.5


def test_require_srtp_admits_sdes_and_refuses_plain(gw: GatewayProcess, tmp_path: Path) -> None:
    result, heard = run_on_private_loop(call_with_webrtc_peer(
        gw, tmp_path, codec="PCMU", meeting="2001", srtp="optional", seconds=4.0))
    assert_two_way_tone(result, heard)
    assert admitted(gw, "2001")["legacy_encryption"] == "sdes-srtp"

    plain = run_pjsua_call(gw.sip_uri("2001"), codec="PCMU", seconds=1, timeout=20)
    assert not plain.connected and plain.final_status == 488 and plain.status_from_wire, plain
    assert plain.warning and plain.warning.startswith("399 "), plain.warning
    assert "2001" in plain.warning and "require-srtp" in plain.warning, plain.warning
    refused = gw.events("call.refused", meeting="2001")
    assert refused and refused[-1]["status"] == 488 and "legacy_media" in refused[-1]["rule"]


def test_prefer_srtp_plain_call_is_admitted_and_logged_as_plain(gw: GatewayProcess) -> None:
    result = run_pjsua_call(gw.sip_uri("2002"), codec="PCMU", seconds=1, timeout=20)
    assert result.connected, result
    assert admitted(gw, "2002")["legacy_encryption"] == "plain"
    assert gw.wait_for_event("call.media_plain", timeout=5, meeting="2002")["rule"].endswith("prefer-srtp")


def test_signaling_tls_required_refuses_udp_with_403_and_admits_tls(gw: GatewayProcess) -> None:
    refused = run_pjsua_call(gw.sip_uri("3000", "udp"), codec="PCMU", seconds=1, timeout=20)
    assert not refused.connected and refused.final_status == 403 and refused.status_from_wire, refused
    assert refused.warning and "signaling=tls-required" in refused.warning, refused.warning
    assert "3000" in refused.warning

    over_tls = run_pjsua_call(gw.sip_uri("3000", "tls"), codec="PCMU", seconds=1, timeout=20,
                              transport="tls", srtp="mandatory")
    assert over_tls.connected, over_tls
    event = admitted(gw, "3000")
    assert event["transport"] == "tls" and event["legacy_encryption"] == "sdes-srtp", event


def test_require_srtp_names_the_rule_and_the_unusable_suite(gw: GatewayProcess) -> None:
    result = run_pjsua_call(gw.sip_uri("2001"), codec="PCMU", seconds=1, timeout=20, srtp="mandatory",
                            srtp_suite="AES_256_CM_HMAC_SHA1_80")
    assert not result.connected and result.final_status == 488 and result.status_from_wire, result
    assert result.warning and "require-srtp" in result.warning, result.warning
    assert "AES_256_CM_HMAC_SHA1_80 is known but not supported" in result.warning, result.warning


def test_mutual_tls_admits_a_client_with_a_trusted_certificate_only(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    client_cert, client_key = make_test_certificate(tmp_path / "client", "room-system")
    mtls = gateway_factory(tls=True, config={"sip": {"tls_ca": str(client_cert), "tls_verify_client": True}})

    trusted = run_pjsua_call(mtls.sip_uri("4000", "tls"), codec="PCMU", seconds=1, timeout=20,
                             transport="tls", srtp="mandatory", tls_cert=client_cert, tls_key=client_key)
    assert trusted.connected, trusted
    assert admitted(mtls, "4000")["transport"] == "tls"

    anonymous = run_pjsua_call(mtls.sip_uri("4001", "tls"), codec="PCMU", seconds=1, timeout=20,
                               transport="tls", srtp="mandatory")
    assert not anonymous.connected and not anonymous.status_from_wire, anonymous
    assert not mtls.events("sip.invite.received", transport="tls")[1:], "an INVITE got past the handshake"
