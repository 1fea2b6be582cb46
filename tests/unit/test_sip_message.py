"""SIP message model: parser, headers, URIs, serialiser, stream framing."""

from __future__ import annotations

import pytest

from sip.framing import FramingError, StreamFramer
from sip.headers import Headers, canonical_name, split_list
from sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)
from sip.uri import NameAddr, SipUri, UriError, Via

BASIC = (
    b"OPTIONS sip:meeting@198.51.100.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:room@192.0.2.10>;tag=a1\r\n"
    b"To: <sip:meeting@198.51.100.1>\r\n"
    b"Call-ID: basic-1\r\n"
    b"CSeq: 7 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_basic_request_fields() -> None:
    msg = parse_message(BASIC)
    assert isinstance(msg, SipRequest)
    assert msg.method == "OPTIONS"
    assert msg.uri.user == "meeting" and msg.uri.host == "198.51.100.1"
    assert msg.call_id == "basic-1"
    assert msg.cseq == (7, "OPTIONS")
    assert msg.from_addr.tag == "a1"
    assert msg.to_addr.tag is None
    assert msg.top_via is not None and msg.top_via.branch == "z9hG4bK-1"
    assert msg.top_via.port == 5062


def test_compact_forms_expand_and_names_are_case_insensitive() -> None:
    data = (
        b"INVITE sip:m@h SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"f: <sip:a@b>;tag=1\r\nt: <sip:m@h>\r\ni: cid\r\nmAx-FoRwArDs: 70\r\n"
        b"cseq: 1 INVITE\r\nm: <sip:a@192.0.2.1>\r\nk: timer\r\nc: application/sdp\r\n"
        b"l: 4\r\n\r\nv=0\n"
    )
    msg = parse_message(data)
    h = msg.headers
    assert h.get("call-id") == "cid" == msg.call_id
    assert h.get("CONTACT") == "<sip:a@192.0.2.1>"
    assert h.get("Supported") == "timer"
    assert h.get("Content-Type") == "application/sdp"
    assert msg.body == b"v=0\n"
    names = [n for n, _ in h.items()]
    assert "Via" in names and "From" in names and "To" in names and "Call-ID" in names
    assert canonical_name("cSEQ") == "CSeq" and canonical_name("www-authenticate") == \
        "WWW-Authenticate"


def test_multi_value_headers_respect_quotes_and_angle_brackets() -> None:
    h = Headers()
    h.add("Contact", '"Doe, John" <sip:j@a;x=1,2>;q=0.5, <sip:k@b>')
    h.add("contact", "<sip:l@c>")
    assert h.values("Contact") == ['"Doe, John" <sip:j@a;x=1,2>;q=0.5', "<sip:k@b>",
                                   "<sip:l@c>"]
    h.add("Date", "Sat, 13 Nov 2010 23:29:00 GMT")
    assert h.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert split_list('a, "b,\\" c", d') == ["a", '"b,\\" c"', "d"]


def test_multiple_vias_in_one_line_and_many_lines() -> None:
    data = BASIC.replace(
        b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1\r\n",
        b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1, SIP/2.0/TCP p1.example;"
        b"branch=z9hG4bK-2\r\nVia: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK-3\r\n",
    )
    vias = parse_message(data).vias
    assert [v.transport for v in vias] == ["UDP", "TCP", "TLS"]
    assert vias[2].host == "[2001:db8::1]" and vias[2].port == 5061


def test_folded_lines_are_unfolded() -> None:
    data = BASIC.replace(
        b"CSeq: 7 OPTIONS\r\n", b"CSeq: 7\r\n   OPTIONS\r\nSubject: first\r\n\tsecond\r\n"
    )
    msg = parse_message(data)
    assert msg.cseq == (7, "OPTIONS")
    assert msg.headers.get("Subject") == "first second"


def test_bare_lf_line_ends_accepted() -> None:
    msg = parse_message(BASIC.replace(b"\r\n", b"\n"))
    assert msg.call_id == "basic-1"


def test_response_parse_and_empty_reason() -> None:
    data = (
        b"SIP/2.0 180 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    assert msg.status == 180 and msg.reason == ""


def test_serialiser_round_trip() -> None:
    msg = parse_message(BASIC.replace(b"Content-Length: 0", b"Content-Length: 5") + b"hello")
    again = parse_message(bytes(msg))
    assert isinstance(again, SipRequest)
    assert again.method == msg.method and str(again.uri) == str(msg.uri)
    assert again.headers == msg.headers
    assert again.body == b"hello"
    resp = make_response(again, 486, to_tag="xyz")
    back = parse_message(bytes(resp))
    assert isinstance(back, SipResponse)
    assert back.status == 486 and back.reason == "Busy Here"
    assert back.to_addr.tag == "xyz" and back.call_id == "basic-1"
    assert back.headers.get("Content-Length") == "0"


def test_serialiser_recomputes_content_length() -> None:
    req = SipRequest("MESSAGE", "sip:a@b")
    req.headers.add("Content-Length", "999")
    req.body = b"abc"
    assert b"Content-Length: 3\r\n\r\nabc" in bytes(req)
    assert bytes(req).count(b"Content-Length") == 1


@pytest.mark.parametrize(
    ("data", "status", "has_partial"),
    [
        (BASIC.replace(b"Content-Length: 0", b"Content-Length: 50"), 400, True),
        (BASIC.replace(b"Content-Length: 0", b"Content-Length: -3"), 400, True),
        (BASIC.replace(b"Content-Length: 0", b"Content-Length: abc"), 400, True),
        (BASIC.replace(b"Call-ID: basic-1\r\n", b""), 400, True),
        (BASIC.replace(b"CSeq: 7 OPTIONS\r\n", b""), 400, True),
        (BASIC.replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE"), 400, True),
        (BASIC.replace(b"CSeq: 7 OPTIONS", b"CSeq: 99999999999 OPTIONS"), 400, True),
        (BASIC.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1\r\n", b""), 400, True),
        (BASIC.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, True),
        (BASIC.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, True),
        (BASIC[:30], 400, False),
        (b"\x00\x01\x02\xff\xfe garbage \x80", 400, False),
        (b"", 400, False),
        (b"\r\n\r\n", 400, False),
    ],
)
def test_malformed_messages_raise_typed_error(data: bytes, status: int,
                                               has_partial: bool) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == status
    assert (info.value.partial is not None) == has_partial


def test_udp_missing_content_length_takes_rest_and_extra_octets_dropped() -> None:
    no_cl = BASIC.replace(b"Content-Length: 0\r\n", b"") + b"body!"
    assert parse_message(no_cl).body == b"body!"
    extra = BASIC.replace(b"Content-Length: 0", b"Content-Length: 2") + b"okTRAILING"
    assert parse_message(extra).body == b"ok"


def test_uri_parsing() -> None:
    uri = SipUri.parse("sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?subject=x")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "pw", "[2001:db8::1]", 5061)
    assert uri.transport == "tcp" and "lr" in uri.params and uri.headers == "subject=x"
    assert SipUri.parse("sip:user;par=u%40example.net@example.com").user == \
        "user;par=u@example.net"
    assert SipUri.parse("tel:+123").opaque == "+123"
    for bad in ("sip:user@2001:db8::10", "sip:a b@c", "<sip:a@b>", "nocolon", "sip:a@h:99999"):
        with pytest.raises(UriError):
            SipUri.parse(bad)


def test_name_addr_forms() -> None:
    na = NameAddr.parse('"J \\"R\\"" <sip:j@example.com;transport=udp>;tag=9;q=0.3')
    assert na.display == 'J "R"' and na.tag == "9" and na.uri.transport == "udp"
    spec = NameAddr.parse("sip:j@example.com;tag=5")
    assert spec.tag == "5" and spec.uri.params == {}
    assert NameAddr.parse("caller<sip:c@example.com>;tag=1").display == "caller"
    with pytest.raises(UriError):
        NameAddr.parse('"unterminated <sip:a@b>')
    with pytest.raises(UriError):
        NameAddr.parse("Bell, Alexander <sip:a@b>")
    assert str(NameAddr.parse(str(na))) == str(na)


def test_via_with_lws_everywhere() -> None:
    via = Via.parse("SIP  /   2.0 / UDP    192.0.2.2  ;  branch = z9hG4bK30239 ; rport")
    assert via.transport == "UDP" and via.host == "192.0.2.2"
    assert via.branch == "z9hG4bK30239" and via.params["rport"] is None
    with pytest.raises(UriError):
        Via.parse("SIP/3.0/UDP host")


def test_stream_framer_splits_by_content_length_and_skips_keepalives() -> None:
    framer = StreamFramer()
    one = BASIC
    two = BASIC.replace(b"Content-Length: 0", b"Content-Length: 3") + b"abc"
    stream = b"\r\n\r\n" + one + b"\r\n" + two
    frames: list[bytes] = []
    for i in range(0, len(stream), 7):  # arbitrary chunking
        frames.extend(framer.feed(stream[i:i + 7]))
    assert frames == [one, two]
    assert parse_message(frames[1]).body == b"abc"
    assert framer.buffered == 0


def test_stream_framer_refuses_missing_or_bad_content_length() -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(BASIC.replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(FramingError):
        StreamFramer().feed(BASIC.replace(b"Content-Length: 0", b"Content-Length: x"))
    with pytest.raises(FramingError):
        StreamFramer().feed(b"A" * 70000)
