"""A small SIP UAC over UDP for tests and benchmarks: places calls into the gateway.

pjsua and baresip are real peers, but they are whole processes per call and hide the
SIP exchange; tests that need many calls (the calls and call-setup benchmarks) or
need to look at every response (video tests, hostile-peer tests) use this instead.
It is built on the project's own SIP core: :mod:`sip.message` builds and parses
every message, :class:`sip.dialog.Dialog` builds the in-dialog requests, and every
request runs through the client transaction tables of :mod:`sip.transaction`: the INVITE
client transaction (Timer A retransmits the INVITE until a response, Timer B gives up
after 64*T1, a 300-699 is ACKed inside the transaction, 2xx retransmissions are handed
up and ACKed again) and the non-INVITE one for BYE and INFO (Timers E, F, K).

    uac = await SipUac.create(local_host="127.0.0.1")
    call = await uac.invite("sip:1000@127.0.0.1:5060", offer_sdp("127.0.0.1", 40000))
    call.answer_sdp.media[0].port       # where the gateway wants our RTP
    await call.bye()
    await uac.close()

What it does not do: TCP/TLS, authentication, forking (the first 2xx wins), PRACK, or
retransmit its own 2xx to a re-INVITE from the gateway (loopback loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from sip.dialog import Dialog, new_branch, new_tag
from sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)
from sip.sdp import SdpParseError, SessionDescription
from sip.timers import TimerQueue, TimerValues
from sip.transaction import Destination, Input, Transaction, client_key
from sip.uri import NameAddr, SipUri, UriError

log = structlog.get_logger("tests.sip_uac")

USER_AGENT = "roomgate-test-uac"


class CallFailed(Exception):
    """The INVITE (or a request in the call) got a final non-2xx response, or none at all.

    ``status`` is the SIP status (408 when Timer B/F or ``timeout`` expired without one)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def offer_sdp(host: str, rtp_port: int, payload_types: Iterable[int] = (0, 8), *,
              telephone_event: int | None = 101, session_id: int | None = None) -> str:
    """A plain RTP/AVP audio offer (G.711 by default) naming ``host``:``rtp_port``."""
    pts = list(payload_types)
    names = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000"}
    formats = [str(pt) for pt in pts] + ([str(telephone_event)] if telephone_event else [])
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    lines = [
        "v=0", f"o=- {sid} 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {' '.join(formats)}",
        *(f"a=rtpmap:{pt} {names[pt]}" for pt in pts if pt in names),
    ]
    if telephone_event:
        lines += [f"a=rtpmap:{telephone_event} telephone-event/8000",
                  f"a=fmtp:{telephone_event} 0-15"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class UacCall:
    """One established call (a confirmed dialog, RFC 3261 12.1.2)."""

    uac: SipUac
    dialog: Dialog
    dest: tuple[str, int]
    offer: str
    answer: SipResponse
    answer_sdp: SessionDescription
    #: Called with every in-dialog request the gateway sends (after it has been answered).
    on_request: Callable[[SipRequest], None] | None = None
    #: Every in-dialog request the gateway sent, in order.
    requests: list[SipRequest] = field(default_factory=list)
    #: Set (to the BYE) when the gateway ends the call.
    ended: asyncio.Future[SipRequest] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    ack: bytes = b""

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    @property
    def remote_tag(self) -> str:
        """The gateway's To-tag."""
        return self.dialog.remote_tag

    async def bye(self, timeout: float | None = None) -> SipResponse:
        """End the call; returns the BYE's final response (raises CallFailed on 408/timeout)."""
        self.uac._calls.pop((self.call_id, self.dialog.local_tag), None)
        return await self.uac._request_in_dialog(self, "BYE", timeout=timeout)

    async def reinvite_without_sdp(self, answer_for: Callable[[SessionDescription], str | None],
                                   timeout: float = 10.0) -> SessionDescription:
        """A re-INVITE without SDP (RFC 3261 14.2, as CUCM sends on resume): the gateway's 2xx
        carries its offer, our ACK the SDP ``answer_for(offer)`` returns (None: no body).
        Returns the gateway's offer; raises CallFailed on a non-2xx."""
        return await self.uac._reinvite_without_sdp(self, answer_for, timeout)

    async def info(self, content_type: str, body: bytes | str,
                   timeout: float | None = None) -> SipResponse:
        """Send INFO (RFC 6086) in the dialog; returns its final response."""
        data = body.encode() if isinstance(body, str) else body
        return await self.uac._request_in_dialog(
            self, "INFO", headers=[("Content-Type", content_type)], body=data, timeout=timeout)


@dataclass
class _ClientTx:
    """A client transaction of ours (INVITE or not) and who waits for its final response."""

    tx: Transaction
    future: asyncio.Future[SipResponse]
    provisional: list[SipResponse] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    """Hands datagrams to the UAC (set right after the socket is bound)."""

    uac: SipUac | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if self.uac is not None:
            self.uac._datagram(data, (addr[0], addr[1]))


class SipUac:
    """A UDP SIP user agent client bound to one local address (see the module docstring)."""

    def __init__(self, transport: asyncio.DatagramTransport, host: str, port: int,
                 timer_values: TimerValues) -> None:
        self._transport = transport
        self.host, self.port = host, port
        self._values = timer_values
        self._loop = asyncio.get_running_loop()
        self._timers = TimerQueue()
        self._timer_handle: asyncio.TimerHandle | None = None
        self._txs: dict[tuple[str, ...], _ClientTx] = {}
        self._calls: dict[tuple[str, str], UacCall] = {}
        self._abandoned: set[str] = set()  # Call-IDs given up: a late 2xx is ACKed, then BYEd
        #: Datagrams that did not parse (counted, logged, otherwise ignored).
        self.dropped = 0

    @classmethod
    async def create(cls, local_host: str = "127.0.0.1", local_port: int = 0, *,
                     timer_values: TimerValues | None = None) -> SipUac:
        """Bind a UDP socket on ``local_host``:``local_port`` (0: any free port)."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _Protocol, local_addr=(local_host, local_port))
        port = transport.get_extra_info("sockname")[1]
        uac = cls(transport, local_host, port, timer_values or TimerValues())
        protocol.uac = uac
        return uac

    @property
    def contact(self) -> str:
        return f"<sip:uac@{self.host}:{self.port}>"

    async def close(self) -> None:
        """Fail whatever is in flight and close the socket (calls are not hung up)."""
        for ctx in self._txs.values():
            if not ctx.future.done():
                ctx.future.set_exception(CallFailed(408, "UAC closed"))
        for call in self._calls.values():
            if not call.ended.done():
                call.ended.cancel()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        self._transport.close()

    # ------------------------------------------------------------------------------ INVITE
    async def invite(self, target_uri: str, sdp: str, *,
                     headers: Iterable[tuple[str, str]] = (), timeout: float = 10.0) -> UacCall:
        """Place a call: INVITE, wait through 1xx, ACK the 2xx; raises CallFailed otherwise."""
        target = SipUri.parse(target_uri)
        dest = (target.host.strip("[]"), target.port or 5060)
        call_id = f"{secrets.token_hex(12)}@{self.host}"
        local_tag = new_tag()
        local = NameAddr(SipUri.parse(f"sip:uac@{self.host}:{self.port}"), params={"tag": local_tag})
        dialog = Dialog(call_id=call_id, local_tag=local_tag, remote_tag="",
                        local_uri=str(local), remote_uri=f"<{target_uri}>", remote_target=target)
        req = dialog.build_request("INVITE", self._via(new_branch()))
        req.headers.add("Contact", self.contact)
        req.headers.add("User-Agent", USER_AGENT)
        for name, value in headers:
            req.headers.add(name, value)
        req.headers.add("Content-Type", "application/sdp")
        req.body = sdp.encode()
        ctx = self._start(req, dest)
        try:
            resp = await asyncio.wait_for(asyncio.shield(ctx.future), timeout)
        except TimeoutError:
            self._give_up(ctx)
            raise CallFailed(408, f"no final response within {timeout} s") from None
        if resp.status >= 300:
            raise CallFailed(resp.status, resp.reason)
        return self._confirm(dialog, dest, sdp, resp)

    def _confirm(self, dialog: Dialog, dest: tuple[str, int], sdp: str,
                 resp: SipResponse) -> UacCall:
        """RFC 3261 12.1.2 / 13.2.2.4: the dialog from the 2xx, then the ACK."""
        dialog.remote_tag = resp.to_addr.tag or ""
        dialog.remote_uri = resp.headers.get("To") or dialog.remote_uri
        contacts = resp.headers.values("Contact")
        if contacts:
            with contextlib.suppress(UriError):
                dialog.remote_target = NameAddr.parse(contacts[0]).uri
        dialog.route_set = list(reversed(resp.headers.values("Record-Route")))
        # build_request numbers it local_seq + 1; the INVITE took 1, the ACK reuses it.
        dialog.local_seq -= 1
        ack = dialog.build_request("ACK", self._via(new_branch()))
        try:
            answer = SessionDescription.parse(resp.body)
        except SdpParseError as exc:
            log.warning("sip_uac.answer.unusable", call_id=dialog.call_id, error=str(exc))
            answer = None
        call = UacCall(self, dialog, dest, sdp, resp, answer or SessionDescription.parse(
            "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"), ack=bytes(ack))
        self._calls[(dialog.call_id, dialog.local_tag)] = call
        self._sendto(call.ack, self._target_addr(call))
        if answer is None:  # confirmed but useless: hang it up rather than leave it running
            self._loop.create_task(call.bye())
            raise CallFailed(resp.status, "2xx without a usable SDP answer")
        return call

    def _give_up(self, ctx: _ClientTx) -> None:
        """Our timeout: CANCEL if the gateway is proceeding (RFC 3261 9.1); a late 2xx is BYEd."""
        invite = ctx.tx.request
        self._abandoned.add(invite.call_id)
        if ctx.provisional:
            cancel = SipRequest("CANCEL", invite.uri)
            for name in ("Via", "Max-Forwards", "From", "To", "Call-ID"):
                cancel.headers.add(name, invite.headers.get(name) or "")
            cancel.headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
            self._sendto(bytes(cancel), ctx.tx.dest.addr)

    def _invite_2xx(self, resp: SipResponse) -> None:
        """A 2xx after the first (retransmitted, or late after we gave up): ACK it (13.2.2.4)."""
        from_tag = resp.from_addr.tag or ""
        call = self._calls.get((resp.call_id, from_tag))
        if call is not None:
            self._sendto(call.ack, self._target_addr(call))
            return
        if resp.call_id in self._abandoned:
            # We gave up on it but the gateway answered anyway: ACK, then hang up at once.
            self._abandoned.discard(resp.call_id)
            dialog = Dialog(call_id=resp.call_id, local_tag=from_tag, remote_tag="",
                            local_uri=resp.headers.get("From") or "", remote_uri="",
                            remote_target=None, local_seq=1)
            try:
                late = self._confirm(dialog, self._contact_addr(resp), "", resp)
            except CallFailed:
                return
            self._loop.create_task(late.bye())

    # --------------------------------------------------------------------- in-dialog requests
    async def _request_in_dialog(self, call: UacCall, method: str, *,
                                 headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                                 timeout: float | None = None) -> SipResponse:
        req = call.dialog.build_request(method, self._via(new_branch()), extra=None)
        req.headers.add("User-Agent", USER_AGENT)
        for name, value in headers:
            req.headers.add(name, value)
        req.body = body
        ctx = self._start(req, self._target_addr(call))
        resp = await (asyncio.wait_for(ctx.future, timeout) if timeout else ctx.future)
        if resp.status >= 300:
            raise CallFailed(resp.status, resp.reason)
        return resp

    async def _reinvite_without_sdp(self, call: UacCall,
                                    answer_for: Callable[[SessionDescription], str | None],
                                    timeout: float) -> SessionDescription:
        req = call.dialog.build_request("INVITE", self._via(new_branch()))
        req.headers.add("Contact", self.contact)
        req.headers.add("User-Agent", USER_AGENT)
        ctx = self._start(req, self._target_addr(call))
        resp = await asyncio.wait_for(asyncio.shield(ctx.future), timeout)
        if resp.status >= 300:
            raise CallFailed(resp.status, resp.reason)
        offer = SessionDescription.parse(resp.body)
        answer = answer_for(offer)
        call.dialog.local_seq -= 1  # the ACK takes the re-INVITE's CSeq number (13.2.2.4)
        ack = call.dialog.build_request("ACK", self._via(new_branch()))
        if answer is not None:
            ack.headers.add("Content-Type", "application/sdp")
            ack.body = answer.encode()
            call.offer = answer  # what we answer a later re-INVITE of the gateway with
        call.ack = bytes(ack)  # a retransmitted 2xx gets this ACK again
        self._sendto(call.ack, self._target_addr(call))
        return offer

    def _on_request(self, req: SipRequest, addr: tuple[str, int]) -> None:
        """The gateway's request: in-dialog ones are answered 200 and reported, others 481."""
        if req.method == "ACK":
            return  # the ACK to our 2xx of a re-INVITE: nothing to do
        try:
            to_tag = req.to_addr.tag or ""
        except SipParseError:
            to_tag = ""
        call = self._calls.get((req.call_id, to_tag))
        if call is None:
            self._sendto(bytes(make_response(req, 481)), addr)
            return
        resp = make_response(req, 200)
        resp.headers.add("User-Agent", USER_AGENT)
        if req.method in ("INVITE", "UPDATE"):
            resp.headers.add("Contact", self.contact)
            if req.body or req.method == "INVITE":
                resp.headers.add("Content-Type", "application/sdp")
                resp.body = call.offer.encode()
        self._sendto(bytes(resp), addr)
        call.requests.append(req)
        if req.method == "BYE":
            self._calls.pop((call.call_id, call.dialog.local_tag), None)
            if not call.ended.done():
                call.ended.set_result(req)
        if call.on_request is not None:
            call.on_request(req)

    # ------------------------------------------------------------------------ plumbing
    def _start(self, req: SipRequest, dest: tuple[str, int]) -> _ClientTx:
        """Run ``req`` through a client transaction of sip.transaction (ict or nict)."""
        kind = "ict" if req.method == "INVITE" else "nict"
        key = client_key(_branch(req), req.method)
        tx = Transaction(kind, req, Destination(dest, "udp"), self._timers, self._values, key)
        ctx = _ClientTx(tx, self._loop.create_future())
        self._txs[key] = ctx
        self._run(tx, tx.start_client(bytes(req), self._loop.time()))
        return ctx

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 3.5.1)
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.dropped += 1
            log.warning("sip_uac.message.dropped", reason=exc.reason, size=len(data))
            return
        try:
            if isinstance(msg, SipRequest):
                self._on_request(msg, addr)
            else:
                self._on_response(msg)
        except (SipParseError, UriError, ValueError) as exc:
            self.dropped += 1
            log.warning("sip_uac.message.dropped", reason=str(exc), size=len(data))

    def _on_response(self, resp: SipResponse) -> None:
        method = resp.cseq[1]
        ctx = self._txs.get(client_key(_branch(resp), method))
        if ctx is None:
            if method == "INVITE" and 200 <= resp.status < 300:
                self._invite_2xx(resp)
            return
        if resp.status < 200:
            inp = Input.RECV_1XX
        elif resp.status < 300 and ctx.tx.kind == "ict":
            inp = Input.RECV_2XX
        else:
            inp = Input.RECV_FINAL
        self._run(ctx.tx, ctx.tx.fire(inp, self._loop.time(), response=resp))

    def _run(self, tx: Transaction, outputs: list[Any]) -> None:
        """Carry out what a client transaction asked for (send, deliver, time out, forget)."""
        ctx = self._txs.get(tx.key)
        for out in outputs:
            if out.kind == "send":
                self._sendto(out.data, tx.dest.addr)
            elif out.kind == "deliver" and out.response is not None and ctx is not None:
                resp = out.response
                if resp.status < 200:
                    ctx.provisional.append(resp)
                elif not ctx.future.done():
                    ctx.future.set_result(resp)
                elif tx.kind == "ict" and resp.status < 300:
                    self._invite_2xx(resp)  # a retransmitted 2xx while Accepted (RFC 6026)
            elif out.kind in ("timeout", "fail"):
                if ctx is not None and not ctx.future.done():
                    what = "Timer B" if tx.kind == "ict" else "Timer F"
                    ctx.future.set_exception(
                        CallFailed(408, f"{tx.request.method}: no final response ({what})"))
            elif out.kind == "terminated":
                self._txs.pop(tx.key, None)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        deadline = self._timers.next_deadline()
        if deadline is not None:
            self._timer_handle = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_handle = None
        now = self._loop.time()
        for key in self._timers.pop_due(now):
            tx, name = cast(tuple[Transaction, str], key)
            self._run(tx, tx.timer_fired(name, now))
        self._reschedule()

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport"

    def _target_addr(self, call: UacCall) -> tuple[str, int]:
        target = call.dialog.remote_target
        if target is None or not target.host:
            return call.dest
        return (target.host.strip("[]"), target.port or 5060)

    def _contact_addr(self, resp: SipResponse) -> tuple[str, int]:
        contacts = resp.headers.values("Contact")
        uri = NameAddr.parse(contacts[0]).uri if contacts else resp.to_addr.uri
        return (uri.host.strip("[]"), uri.port or 5060)

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)


def _branch(msg: SipRequest | SipResponse) -> str:
    via = msg.top_via
    return (via.branch or "") if via else ""


__all__ = ["CallFailed", "SipUac", "UacCall", "offer_sdp"]
