"""Test helpers: a fake clock and a bytes-in/bytes-out harness around :class:`SipEndpoint`.

Kept in the package (as ``twisted.internet.task.Clock`` is) so that the
application's tests can drive SIP calls without sockets too.
"""

from __future__ import annotations

from collections.abc import Callable

from sip.calls import EndReason, InboundCall
from sip.endpoint import SipEndpoint
from sip.events import CallDtmf, CallEnded, CallKeyframeRequested, CallOffered, Transmit
from sip.message import SipRequest, SipResponse, parse_message
from sip.timers import TimerValues

CALLER = ("192.0.2.10", 5062)

OFFER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingHandler:
    """A :class:`sip.calls.CallHandler` that records what it is told."""

    def __init__(self, on_incoming: Callable[[InboundCall], None] | None = None) -> None:
        self.offered: list[InboundCall] = []
        self.ended: list[tuple[InboundCall, EndReason]] = []
        self.digits: list[tuple[InboundCall, str, str]] = []
        self.keyframes: list[InboundCall] = []
        self.on_incoming = on_incoming

    def incoming_call(self, call: InboundCall) -> None:
        self.offered.append(call)
        if self.on_incoming:
            self.on_incoming(call)

    def call_ended(self, call: InboundCall, reason: EndReason) -> None:
        self.ended.append((call, reason))

    def dtmf(self, call: InboundCall, digit: str, source: str) -> None:
        self.digits.append((call, digit, source))

    def keyframe_requested(self, call: InboundCall) -> None:
        self.keyframes.append(call)


class Harness:
    """An endpoint, a fake clock and a handler, driven with bytes."""

    def __init__(self, handler: RecordingHandler | None = None,
                 timer_values: TimerValues | None = None) -> None:
        self.clock = FakeClock()
        self.handler = handler or RecordingHandler()
        self.endpoint = SipEndpoint(clock=self.clock, timer_values=timer_values,
                                    server="roomgate/test")
        self.endpoint.add_listener("udp", "198.51.100.1", 5060)
        self.endpoint.add_listener("tcp", "198.51.100.1", 5060)
        self.sent: list[Transmit] = []

    def _drain(self) -> list[Transmit]:
        out: list[Transmit] = []
        while True:
            batch = self.endpoint.datagrams_to_send()
            out.extend(batch)
            event = self.endpoint.next_event()
            if event is None and not batch:
                break
            if isinstance(event, CallOffered):
                self.handler.incoming_call(event.call)
            elif isinstance(event, CallEnded):
                self.handler.call_ended(event.call, event.reason)
            elif isinstance(event, CallDtmf):
                self.handler.dtmf(event.call, event.digit, event.source)
            elif isinstance(event, CallKeyframeRequested):
                self.handler.keyframe_requested(event.call)
        self.sent.extend(out)
        return out

    def send(self, data: bytes | SipRequest | SipResponse, addr: tuple[str, int] = CALLER,
             transport: str = "udp", connection: int | None = None) -> list[Transmit]:
        """Feed one message (or stream bytes) and return what the endpoint transmitted."""
        raw = data if isinstance(data, bytes) else bytes(data)
        if transport == "udp":
            self.endpoint.receive_datagram(raw, addr, "udp", now=self.clock.now)
        else:
            self.endpoint.receive_stream(connection or 1, raw, addr, transport,
                                         now=self.clock.now)
        return self._drain()

    def act(self, fn: Callable[[], None]) -> list[Transmit]:
        """Run an application action (accept, hangup...) and return what it transmitted."""
        fn()
        return self._drain()

    def advance(self, seconds: float) -> list[Transmit]:
        """Move the clock forward, firing each timer at its own deadline."""
        target = self.clock.now + seconds
        out: list[Transmit] = []
        while True:
            deadline = self.endpoint.get_timer()
            if deadline is None or deadline > target:
                break
            self.clock.now = max(self.clock.now, deadline)
            self.endpoint.handle_timer(self.clock.now)
            out.extend(self._drain())
        self.clock.now = target
        return out


def parsed(items: list[Transmit]) -> list[SipRequest | SipResponse]:
    """Parse every transmitted message (skipping close markers)."""
    return [parse_message(t.data) for t in items if t.data]


def statuses(items: list[Transmit]) -> list[int]:
    """Status codes of the transmitted responses (requests are left out)."""
    # Read the status line only: a 400 to a request without Call-ID has no Call-ID either.
    return [int(t.data[8:11]) for t in items if t.data.startswith(b"SIP/2.0 ")]


def invite(call_id: str = "call-1@192.0.2.10", branch: str = "z9hG4bK-inv-1",
           from_tag: str = "caller-tag", cseq: int = 1, sdp: str | None = OFFER_SDP,
           to_tag: str | None = None, transport: str = "UDP",
           extra: list[tuple[str, str]] | None = None,
           user: str = "meeting42") -> SipRequest:
    """An INVITE as a room system would send it."""
    req = SipRequest("INVITE", f"sip:{user}@198.51.100.1")
    h = req.headers
    h.add("Via", f"SIP/2.0/{transport} 192.0.2.10:5062;branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f'"Room 1" <sip:room1@192.0.2.10>;tag={from_tag}')
    h.add("To", f"<sip:{user}@198.51.100.1>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} INVITE")
    h.add("Contact", f"<sip:room1@192.0.2.10:5062;transport={transport.lower()}>")
    for name, value in extra or ():
        h.add(name, value)
    if sdp is not None:
        h.add("Content-Type", "application/sdp")
        req.body = sdp.encode()
    return req


def in_dialog(method: str, inv: SipRequest, to_tag: str, cseq: int,
              branch: str) -> SipRequest:
    """A request in the dialog the INVITE created (ACK uses the INVITE's CSeq number)."""
    req = SipRequest(method, "sip:meeting42@198.51.100.1:5060")
    h = req.headers
    via = inv.headers.get("Via") or ""
    h.add("Via", via.split(";branch=")[0] + f";branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", inv.headers.get("From") or "")
    h.add("To", f"{inv.headers.get('To')};tag={to_tag}")
    h.add("Call-ID", inv.call_id)
    h.add("CSeq", f"{cseq} {method}")
    return req


def cancel_for(inv: SipRequest) -> SipRequest:
    """CANCEL for ``inv`` (RFC 3261 9.1: same Via branch, Request-URI, Call-ID, From, To)."""
    req = SipRequest("CANCEL", inv.uri)
    h = req.headers
    h.add("Via", inv.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        h.add(name, inv.headers.get(name) or "")
    h.add("CSeq", f"{inv.cseq[0]} CANCEL")
    return req


def options(branch: str = "z9hG4bK-opt-1", call_id: str = "opt-1") -> SipRequest:
    """An out-of-dialog OPTIONS ping."""
    req = SipRequest("OPTIONS", "sip:198.51.100.1")
    h = req.headers
    h.add("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch={branch}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:room1@192.0.2.10>;tag=o1")
    h.add("To", "<sip:198.51.100.1>")
    h.add("Call-ID", call_id)
    h.add("CSeq", "1 OPTIONS")
    return req
