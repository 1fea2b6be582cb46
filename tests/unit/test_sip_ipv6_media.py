"""IPv6 media addresses, sans-IO: config, SDP answers and offers with ``c=IN IP6``, and the legacy
leg's latch comparing IPv6 addresses in normalised form (an SDP may spell ::1 as 0:0:0:0:0:0:0:1)."""

from __future__ import annotations

from pathlib import Path

from bridge.codecs import codec_by_name
from bridge.legacy_leg import LegCounters, RtpInbound
from bridge.rtp import RtpPacket
from gateway.config import load_config
from sip.delayed_offer import build_offer
from sip.message import parse_message
from sip.offer_answer import build_answer, choose_audio
from sip.sdp import SessionDescription

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "sip" / "roomsys"


def test_config_takes_ipv6_media_and_public_address(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    f = tmp_path / "gateway.yaml"
    f.write_text('sip:\n  udp: "[::1]:5060"\nmedia:\n  address: "::1"\n'
                 '  public_address: "2001:db8:0::10"\npolicy: policy.yaml\n')
    cfg = load_config(f)
    assert cfg.media.address == "::1" and cfg.media.advertised_address == "2001:db8::10"


def test_polycom_ipv6_offer_gets_an_ip6_answer() -> None:
    invite = parse_message((CORPUS / "polycom_hdx8000_ipv6_invite.sip").read_bytes())
    offer = SessionDescription.parse(invite.body)
    choice = choose_audio(offer)
    assert choice.remote_address == "fd00:7:495:0:2e0:dbff:fe08:aac0"
    answer = str(build_answer(offer, choice, "2001:db8::10", 30000))
    assert "c=IN IP6 2001:db8::10\r\n" in answer and " IN IP6 2001:db8::10\r\n" in answer


def test_our_offer_on_ipv6() -> None:
    assert "c=IN IP6 ::1\r\n" in str(build_offer("::1", 30000))


def test_latch_compares_ipv6_in_normalised_form() -> None:
    counters = LegCounters()
    inbound = RtpInbound(remote_address="0:0:0:0:0:0:0:1", payload_type=0,
                         decoder=codec_by_name("PCMU").decoder(), counters=counters)
    packet = bytes(RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=7,
                             payload=b"\xff" * 160))
    assert inbound.receive(packet, ("::2", 4000, 0, 0)) is None and counters.dropped_wrong_source == 1
    assert inbound.receive(packet, ("::1", 4000, 0, 0)) is not None
    assert inbound.latched == ("::1", 4000) and counters.packets_in == 1
