"""The sans-IO SIP core: bytes and time in, bytes, timers and events out (aioquic style).

``SipEndpoint`` is the transaction layer (RFC 3261 17) plus a UAS core
(8.2, 13.3, 15) for inbound calls.  It never touches a socket or a clock of its
own: transports call :meth:`receive_datagram` / :meth:`receive_stream` and
:meth:`handle_timer` with ``now``, then drain :meth:`datagrams_to_send` and
:meth:`next_event` and re-arm a timer for :meth:`get_timer`.  Actions the
application takes on a call later (``accept`` after joining the meeting) read
the injected ``clock`` and call ``on_output`` so the transport flushes.

Nothing escapes: a message that cannot be handled is answered 400 when there
is a Via to answer to, otherwise dropped with a ``sip.message.dropped`` log line.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from sip import info as sipinfo
from sip import session_timer as st
from sip.calls import CallState, EndReason, InboundCall
from sip.dialog import Dialog, new_branch, new_tag
from sip.events import (
    CallDtmf,
    CallEnded,
    CallKeyframeRequested,
    CallOffered,
    Event,
    Transmit,
)
from sip.framing import FramingError, StreamFramer
from sip.headers import Headers, split_list
from sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)
from sip.ratelimit import PreParseGate, SipLimits, SourceLimiter, Verdict, call_id_of
from sip.sdp import SdpParseError, SessionDescription
from sip.timers import TimerQueue, TimerValues
from sip.transaction import (
    Destination,
    Input,
    State,
    Transaction,
    client_key,
    server_key,
)
from sip.uri import NameAddr, UriError, Via

log = structlog.get_logger("sip")

#: Methods this UAS implements (sent in Allow, RFC 3261 20.5).
ALLOW: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO")
#: Methods we recognise but do not implement: 405 (RFC 3261 8.2.1); anything else is 501.
KNOWN_METHODS = frozenset(ALLOW) | {
    "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
}
#: Option tags we support (RFC 3261 8.2.2.3): session timers (RFC 4028); others get a 420.
SUPPORTED: tuple[str, ...] = ("timer",)
#: RFC 3326 Reason of the BYE that ends a call whose session refreshes stopped (RFC 4028 10).
SESSION_EXPIRED_REASON = 'SIP;cause=408;text="Session timer expired"'
_UNSPECIFIED_HOSTS = ("", "0.0.0.0", "::", "[::]")


def _default_server() -> str:
    try:
        from importlib.metadata import version

        return f"roomgate/{version('roomgate')}"
    except Exception:  # noqa: BLE001 - not installed: still say who we are
        return "roomgate/0"


@dataclass
class _Leg:
    """The endpoint's private state for one inbound call."""

    call: InboundCall
    tx: Transaction
    dest: Destination
    dialog: Dialog | None = None
    pending_2xx: bytes | None = None
    pending_cseq: int | None = None
    rtx_interval: float = 0.5
    hangup_pending: bool = False
    hangup_reason: str | None = None
    #: What the INVITE asked for in session timers (RFC 4028 7.1), read when it arrived.
    timer_request: st.TimerRequest | None = None
    #: Whether this call's source is counted as having an established call (pre-parse gate).
    established: bool = False
    #: The session timer in force (RFC 4028 9), None without one.
    timer: st.TimerAnswer | None = None
    #: Our UPDATE or re-INVITE refreshing the session (RFC 4028 7.4), while it is in progress.
    refresh_tx: Transaction | None = None
    #: Our last re-INVITE and the ACK we sent for its 2xx: a retransmitted 2xx gets the same
    #: ACK again (RFC 3261 13.2.2.4); None before our first re-INVITE was answered.
    reinvite_ack: tuple[Transaction, bytes] | None = None
    #: Our pending 2xx to a re-INVITE without SDP carries an offer: its ACK must answer it.
    answer_due: bool = False


class SipEndpoint:
    """The SIP core for one gateway node (all calls, both transports)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        timer_values: TimerValues | None = None,
        server: str | None = None,
        advertised_host: str | None = None,
    ) -> None:
        self._clock = clock
        self._values = timer_values or TimerValues()
        self.server = server or _default_server()
        self.advertised_host = advertised_host
        self._timers = TimerQueue()
        self._server_txs: dict[tuple[str, ...], Transaction] = {}
        self._client_txs: dict[tuple[str, ...], Transaction] = {}
        self._invite_calls: dict[tuple[str, ...], InboundCall] = {}
        self._legs: dict[InboundCall, _Leg] = {}
        self._dialogs: dict[tuple[str, str, str], InboundCall] = {}
        self._framers: dict[int, StreamFramer] = {}
        self._listen: dict[str, tuple[str, int]] = {}
        self._out: list[Transmit] = []
        self._events: deque[Event] = deque()
        #: Called after an application action produced output (the transport flushes).
        self.on_output: Callable[[], None] | None = None
        #: Per-source limits on new INVITEs and OPTIONS (:mod:`sip.ratelimit`); None: off.
        self.rate_limiter: SourceLimiter | None = SourceLimiter()
        #: The cheap per-source gate in front of the parser (:class:`sip.ratelimit.PreParseGate`);
        #: requests of established calls pass it.  None: off.
        self.preparse_gate: PreParseGate | None = PreParseGate()
        #: Call-IDs of established calls per source IP (what the pre-parse gate lets through).
        self._established: dict[str, set[str]] = {}
        #: Larger messages are dropped unparsed (None: only the stream framing's own bounds).
        self.max_message_bytes: int | None = None
        #: Server transactions kept at once; beyond, new requests get a stateless 503 (None: any).
        self.max_transactions: int | None = None

    def apply_limits(self, limits: SipLimits) -> None:
        """Use ``limits`` (``sip.limits`` in gateway.yaml) from now on; buckets start full."""
        self.rate_limiter = SourceLimiter({"INVITE": limits.invite, "OPTIONS": limits.options})
        self.preparse_gate = PreParseGate(limits.preparse) if limits.preparse is not None else None
        self.max_message_bytes = limits.max_message_bytes
        self.max_transactions = limits.max_transactions

    # ------------------------------------------------------------------ public sans-IO API
    def add_listener(self, transport: str, host: str, port: int) -> None:
        """Record where we listen on ``transport`` (used in Contact and Via)."""
        self._listen[transport] = (host, port)

    def receive_datagram(
        self, data: bytes, addr: tuple[str, int], transport: str = "udp",
        now: float | None = None,
    ) -> None:
        """One UDP datagram from ``addr``."""
        t = self._clock() if now is None else now
        if not self._gate(data, str(addr[0]), t):
            return
        try:
            self._receive(data, Destination(_addr(addr), transport, None), t)
        except Exception:
            log.exception("sip.message.dropped", reason="internal error", size=len(data))

    def receive_stream(
        self, connection: int, data: bytes, addr: tuple[str, int], transport: str = "tcp",
        now: float | None = None,
    ) -> None:
        """Bytes from stream connection ``connection`` (TCP), framed by Content-Length."""
        t = self._clock() if now is None else now
        framer = self._framers.setdefault(connection, StreamFramer())
        try:
            frames = framer.feed(data)
        except FramingError as exc:
            log.info("sip.message.dropped", reason=str(exc), transport=transport)
            self._framers.pop(connection, None)
            self._out.append(Transmit(b"", _addr(addr), transport, connection, close=True))
            return
        dest = Destination(_addr(addr), transport, connection)
        for frame in frames:
            if not self._gate(frame, dest.addr[0], t):
                continue
            try:
                self._receive(frame, dest, t)
            except Exception:
                log.exception("sip.message.dropped", reason="internal error", size=len(frame))

    def connection_lost(self, connection: int) -> None:
        """A stream connection closed; forget its partial data."""
        self._framers.pop(connection, None)

    def transport_failed(self, connection: int | None, addr: tuple[str, int],
                         now: float | None = None) -> None:
        """The transport could not deliver to ``connection``/``addr``: its calls end."""
        for call, leg in list(self._legs.items()):
            if leg.dest.connection == connection and leg.dest.addr == _addr(addr):
                leg.pending_2xx = None
                self._cancel_call_timers(call)
                self._end(call, EndReason.TRANSPORT_ERROR)
                self._forget(call)

    def handle_timer(self, now: float | None = None) -> None:
        """Fire every timer due at ``now``."""
        t = self._clock() if now is None else now
        for key in self._timers.pop_due(t):
            owner: object
            name: str
            owner, name = key  # type: ignore[misc]
            try:
                if isinstance(owner, Transaction):
                    self._run(owner, owner.timer_fired(name, t), t)
                elif isinstance(owner, InboundCall):
                    if name.startswith("session-"):
                        self._session_timer(owner, name, t)
                    else:
                        self._call_timer(owner, name, t)
            except Exception:
                log.exception("sip.timer.error", timer=name)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or None."""
        return self._timers.next_deadline()

    def datagrams_to_send(self) -> list[Transmit]:
        """Everything to transmit now (and forget it)."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        """The next event for the application, or None."""
        return self._events.popleft() if self._events else None

    @property
    def has_pending_output(self) -> bool:
        """Whether bytes or events wait to be taken."""
        return bool(self._out or self._events)

    @property
    def active_calls(self) -> int:
        """Calls whose state is kept (including ones finishing their handshake)."""
        return len(self._legs)

    # ------------------------------------------------------------------ receive path
    def _gate(self, data: bytes, source_ip: str, now: float) -> bool:
        """The size limit and the pre-parse flood gate; requests of a source's established calls
        always pass the gate."""
        if self.max_message_bytes is not None and len(data) > self.max_message_bytes:
            log.info("sip.message.dropped", reason="larger than sip.limits.max_message_bytes",
                     size=len(data), limit=self.max_message_bytes)
            return False
        gate = self.preparse_gate
        if gate is None:
            return True
        calls = self._established.get(source_ip)
        if not calls:
            return gate.admit(data, source_ip, now)
        return gate.admit(data, source_ip, now, in_dialog=lambda raw: call_id_of(raw) in calls)

    def _set_established(self, leg: _Leg, established: bool) -> None:
        """Record (or forget) ``leg`` as an established call from its source (pre-parse gate)."""
        if leg.established == established:
            return
        leg.established = established
        ip = leg.dest.addr[0]
        calls = self._established.setdefault(ip, set())
        if established:
            calls.add(leg.call.call_id)
        else:
            calls.discard(leg.call.call_id)
            if not calls:
                del self._established[ip]

    def _receive(self, data: bytes, dest: Destination, now: float) -> None:
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self._reject_unparseable(exc, dest, len(data))
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg, now)
        else:
            self._on_request(msg, dest, now)

    def _reject_unparseable(self, exc: SipParseError, dest: Destination, size: int) -> None:
        """RFC 3261 8.2 / 18.3: answer 400 (or the hinted status) when a Via is usable."""
        partial = exc.partial
        if isinstance(partial, SipRequest) and partial.method != "ACK" and partial.top_via:
            log.info("sip.request.invalid", reason=exc.reason, status=exc.status,
                     method=partial.method, call_id=partial.call_id)
            self._stamp_via(partial, dest)
            resp = make_response(partial, exc.status, to_tag=new_tag())
            resp.headers.add("Server", self.server)
            resp.headers.add("Warning", _warning(self._our_host(partial, dest), exc.reason))
            self._transmit(dest, bytes(resp))
            log.info("sip.response.sent", status=exc.status, method=partial.method,
                     call_id=partial.call_id, stateless=True)
        else:
            log.info("sip.message.dropped", reason=exc.reason, size=size, transport=dest.transport)

    def _on_request(self, req: SipRequest, dest: Destination, now: float) -> None:
        self._stamp_via(req, dest)
        key = server_key(req)
        tx = self._server_txs.get(key)
        if req.method == "ACK":
            if tx is not None and tx.kind == "ist" and tx.state in (State.COMPLETED,
                                                                    State.CONFIRMED):
                self._run(tx, tx.fire(Input.ACK, now), now)
                return
            self._on_ack(req, now)
            return
        if tx is not None:
            log.debug("sip.request.retransmission", method=req.method, call_id=req.call_id)
            self._run(tx, tx.fire(Input.REQUEST, now), now)
            return
        if req.method == "CANCEL":
            self._on_cancel(req, dest, key, now)
            return
        verdict = self._rate_check(req, dest, now)
        if verdict is Verdict.DROP:
            return
        if self.max_transactions is not None and len(self._server_txs) >= self.max_transactions:
            # Overloaded (RFC 3261 21.5.4): refuse without keeping state for the request.
            log.warning("sip.transactions.full", method=req.method, limit=self.max_transactions)
            resp = make_response(req, 503, to_tag=new_tag())
            resp.headers.add("Server", self.server)
            resp.headers.add("Retry-After", "5")
            self._transmit(dest, bytes(resp))
            return
        tx = Transaction("ist" if req.method == "INVITE" else "nist", req, dest, self._timers,
                         self._values, key)
        self._server_txs[key] = tx
        if verdict is Verdict.REFUSE:  # RFC 3261 21.5.4 503 + 20.33 Retry-After
            assert self.rate_limiter is not None  # only a limiter ever refuses
            self._respond(tx, 503, now, headers=[
                ("Retry-After", str(self.rate_limiter.retry_after(req.method)))])
            return
        if req.method not in ALLOW:
            status = 405 if req.method in KNOWN_METHODS else 501
            log.info("sip.request.unsupported", method=req.method, status=status)
            self._respond(tx, status, now, headers=[("Allow", ", ".join(ALLOW))])
            return
        if req.uri.scheme not in ("sip", "sips"):
            self._respond(tx, 416, now)
            return
        unsupported = [tag for tag in req.headers.values("Require") if tag not in SUPPORTED]
        if unsupported:
            self._respond(tx, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if req.method == "INVITE":
            self._on_invite(req, tx, dest, now)
        elif req.method == "BYE":
            self._on_bye(req, tx, now)
        elif req.method in ("UPDATE", "INFO"):
            self._on_in_dialog(req, tx, now)
        else:
            self._on_options(tx, now)

    def _on_invite(self, req: SipRequest, tx: Transaction, dest: Destination, now: float) -> None:
        frm, to = req.from_addr, req.to_addr
        if to.tag:
            call = self._dialogs.get((req.call_id, to.tag, frm.tag or ""))
            if call is None or call.ended:
                self._respond(tx, 481, now)
            else:
                self._on_reinvite(call, req, tx, now)
            return
        cseq = req.cseq[0]
        for leg in self._legs.values():
            inv = leg.call.invite
            if (inv.call_id == req.call_id and inv.from_addr.tag == frm.tag
                    and inv.cseq[0] == cseq):
                # RFC 3261 8.2.2.2: same request arriving by another path (merged request).
                self._respond(tx, 482, now)
                return
        offer: SessionDescription | None = None
        if req.body:
            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                self._respond(tx, 415, now, headers=[("Accept", "application/sdp")])
                return
            try:
                offer = SessionDescription.parse(req.body)
            except SdpParseError as exc:
                log.info("sip.request.invalid", reason=f"bad SDP: {exc}", call_id=req.call_id)
                self._respond(tx, 400, now, reason="Malformed SDP")
                return
        timer_request = self._timer_request(req, tx, now)
        if timer_request is None:
            return
        call = InboundCall(self, req, transport=dest.transport, source=dest.addr, offer=offer,
                           local_tag=new_tag())
        self._legs[call] = _Leg(call, tx, dest, rtx_interval=self._values.t1,
                                timer_request=timer_request)
        self._invite_calls[tx.key] = call
        log.info("sip.invite.received", call_id=req.call_id, transport=dest.transport,
                 has_offer=offer is not None)
        self._respond(tx, 100, now)
        self._events.append(CallOffered(call))

    def _on_reinvite(self, call: InboundCall, req: SipRequest, tx: Transaction,
                     now: float) -> None:
        """re-INVITE in the confirmed dialog (RFC 3261 14.2): a new offer/answer and/or a
        session refresh (RFC 4028 7.4); without ``call.on_offer`` the previous answer is repeated."""
        leg = self._legs[call]
        if call.state is not CallState.CONFIRMED or leg.dialog is None \
                or leg.pending_2xx is not None:
            # RFC 3261 14.2: an INVITE while one is still in progress -> 500 + Retry-After.
            self._respond(tx, 500, now, headers=[("Retry-After", "1")])
            return
        cseq = req.cseq[0]
        if leg.dialog.remote_seq is not None and cseq <= leg.dialog.remote_seq:
            self._respond(tx, 500, now, reason="CSeq out of order")
            return
        leg.dialog.remote_seq = cseq
        answer = self._reoffer(call, leg, req, tx, now)
        if answer is None:
            return
        if not req.body:
            answer = self._offer_in_2xx(call)
            leg.answer_due = True
        self._update_target(leg, req)
        resp = self._respond(tx, 200, now, to_tag=call.local_tag,
                             headers=self._dialog_headers(call, leg) + self._timer_headers(leg),
                             body=answer.encode(), content_type="application/sdp")
        self._start_2xx(call, leg, bytes(resp), cseq, now)
        self._arm_session_timer(call, leg, now)

    def _offer_in_2xx(self, call: InboundCall) -> str:
        """A re-INVITE without SDP: our 2xx carries an offer (RFC 3261 14.2, RFC 3264 8), the
        application's (``call.on_offer_request``) or else our current SDP unchanged."""
        offer = call.answer_sdp or ""
        if call.on_offer_request is not None:
            try:
                offer = call.on_offer_request(call)
            except Exception:
                log.exception("sip.reinvite.offer_error", call_id=call.call_id)
        call.answer_sdp = offer
        log.info("sip.reinvite.offer_sent", call_id=call.call_id)
        return offer

    def _on_in_dialog(self, req: SipRequest, tx: Transaction, now: float) -> None:
        """UPDATE (RFC 3311) and INFO (RFC 6086) inside an established dialog."""
        call = self._dialogs.get((req.call_id, req.to_addr.tag or "", req.from_addr.tag or ""))
        leg = self._legs.get(call) if call is not None else None
        if call is None or leg is None or call.ended:
            self._respond(tx, 481, now)
            return
        cseq = req.cseq[0]
        remote_seq = leg.dialog.remote_seq if leg.dialog else call.invite.cseq[0]
        if remote_seq is not None and cseq <= remote_seq:
            self._respond(tx, 500, now, reason="CSeq out of order")  # RFC 3261 12.2.2
            return
        if leg.dialog is not None:
            leg.dialog.remote_seq = cseq
        if req.method == "INFO":
            self._on_info(call, req, tx, now)
            return
        if call.state is not CallState.CONFIRMED or leg.dialog is None \
                or leg.pending_2xx is not None:
            # RFC 3311 5.2: an offer of ours not yet answered (the 2xx awaits its ACK, or the
            # INVITE is unanswered) -> 500 with Retry-After between 0 and 10 s.
            self._respond(tx, 500, now, headers=[("Retry-After", "2")])
            return
        answer: str | None = call.answer_sdp
        if req.body:
            answer = self._reoffer(call, leg, req, tx, now)
            if answer is None:
                return
        else:
            timer_request = self._timer_request(req, tx, now)
            if timer_request is None:
                return
            self._renegotiate(leg, timer_request)
        self._update_target(leg, req)
        body = answer.encode() if req.body and answer else b""
        self._respond(tx, 200, now, to_tag=call.local_tag,
                      headers=[("Contact", self._contact(call, leg))] + self._timer_headers(leg),
                      body=body, content_type="application/sdp")
        log.info("sip.update.answered", call_id=call.call_id, with_offer=bool(req.body))
        self._arm_session_timer(call, leg, now)

    def _on_info(self, call: InboundCall, req: SipRequest, tx: Transaction, now: float) -> None:
        """INFO (RFC 6086): legacy DTMF and picture_fast_update bodies, 200 or 415/469/400."""
        if req.headers.get("Info-Package"):
            # RFC 6086 4.2.2: we advertise no Info Packages, so every package is unsupported.
            self._respond(tx, 469, now, reason="Bad Info Package", to_tag=call.local_tag)
            return
        ctype = sipinfo.content_type(req.headers.get("Content-Type"))
        try:
            what = sipinfo.classify(ctype, req.body)
        except LookupError:
            self._respond(tx, 415, now, to_tag=call.local_tag,
                          headers=[("Accept", ", ".join(sipinfo.ACCEPTED_TYPES))])
            return
        except sipinfo.InfoBodyError as exc:
            log.info("sip.info.invalid", call_id=call.call_id, reason=str(exc))
            self._respond(tx, 400, now, reason="Bad INFO body", to_tag=call.local_tag)
            return
        self._respond(tx, 200, now, to_tag=call.local_tag)
        if isinstance(what, sipinfo.DtmfInfo):
            # The digit itself is never logged (it may be a PIN).
            log.info("sip.info.dtmf", call_id=call.call_id, content_type=ctype)
            self._events.append(CallDtmf(call, what.digit, "sip-info", what.duration_ms))
        elif isinstance(what, sipinfo.KeyframeRequest):
            log.info("sip.info.keyframe_request", call_id=call.call_id)
            self._events.append(CallKeyframeRequested(call))

    def _reoffer(self, call: InboundCall, leg: _Leg, req: SipRequest, tx: Transaction,
                 now: float) -> str | None:
        """The answer to a re-INVITE/UPDATE offer, or None when a final error was sent."""
        timer_request = self._timer_request(req, tx, now)
        if timer_request is None:
            return None
        offer: SessionDescription | None = None
        if req.body:
            if sipinfo.content_type(req.headers.get("Content-Type")) != "application/sdp":
                self._respond(tx, 415, now, to_tag=call.local_tag,
                              headers=[("Accept", "application/sdp")])
                return None
            try:
                offer = SessionDescription.parse(req.body)
            except SdpParseError as exc:
                log.info("sip.request.invalid", reason=f"bad SDP: {exc}", call_id=call.call_id)
                self._respond(tx, 400, now, reason="Malformed SDP", to_tag=call.local_tag)
                return None
        if leg.refresh_tx is not None and offer is not None:
            # RFC 3261 14.1 / RFC 3311 5.2: our own request is in progress: glare -> 491.
            self._respond(tx, 491, now, to_tag=call.local_tag)
            return None
        answer = call.answer_sdp or ""
        if offer is not None and call.on_offer is not None:
            try:
                new = call.on_offer(call, offer)
            except Exception:
                log.exception("sip.reoffer.error", call_id=call.call_id)
                new = None
            if new is None:
                log.info("sip.reoffer.refused", call_id=call.call_id, method=req.method)
                self._respond(tx, 488, now, to_tag=call.local_tag)
                return None
            answer = new
            call.offer = offer
            call.answer_sdp = answer
        self._renegotiate(leg, timer_request)
        log.info("sip.reoffer.answered", call_id=call.call_id, method=req.method,
                 new_answer=offer is not None and call.on_offer is not None)
        return answer

    def _timer_request(self, req: SipRequest, tx: Transaction, now: float
                       ) -> st.TimerRequest | None:
        """RFC 4028 8.1: parse the request's timers; 400 or 422 (None) when unusable."""
        try:
            treq = st.parse_request(req.headers)
        except st.SessionTimerError as exc:
            self._respond(tx, 400, now, reason="Bad Session-Expires")
            log.info("sip.request.invalid", reason=str(exc), call_id=req.call_id)
            return None
        if st.too_small(treq):
            self._respond(tx, 422, now, reason="Session Interval Too Small",
                          headers=[("Min-SE", str(st.MIN_SE_FLOOR))])
            log.info("sip.session_timer.too_small", call_id=req.call_id,
                     interval=treq.interval, min_se=st.MIN_SE_FLOOR)
            return None
        return treq

    def _renegotiate(self, leg: _Leg, treq: st.TimerRequest) -> None:
        """A session refresh request (RFC 4028 7.4, 9) sets the timer anew; a refresh that
        omits ``Supported: timer`` keeps what the dialog's first INVITE said it supports."""
        if leg.timer is None and treq.interval is None:
            return
        if leg.timer_request is not None and leg.timer_request.supported and not treq.supported:
            treq = st.TimerRequest(treq.interval, treq.refresher, treq.min_se, True)
        leg.timer_request = treq
        if treq.interval is None and leg.timer is not None:
            treq = st.TimerRequest(leg.timer.interval, leg.timer.refresher, treq.min_se,
                                   treq.supported)
        leg.timer = st.negotiate(treq) or leg.timer

    def _timer_headers(self, leg: _Leg) -> list[tuple[str, str]]:
        """``Session-Expires`` (and ``Require: timer``) for a 2xx (RFC 4028 9)."""
        if leg.timer is None:
            return []
        out = [("Session-Expires", leg.timer.header())]
        if leg.timer.require:
            out.append(("Require", "timer"))
        return out

    def _update_target(self, leg: _Leg, req: SipRequest) -> None:
        """A target refresh request updates the remote target (RFC 3261 12.2.2)."""
        contacts = req.headers.values("Contact")
        if leg.dialog is not None and contacts:
            try:
                leg.dialog.remote_target = NameAddr.parse(contacts[0]).uri
            except UriError:
                pass

    def _arm_session_timer(self, call: InboundCall, leg: _Leg, now: float) -> None:
        """(Re)start the refresh or expiry timer after a 2xx refresh (RFC 4028 10)."""
        self._timers.cancel((call, "session-refresh"))
        self._timers.cancel((call, "session-expire"))
        timer = leg.timer
        call.session_expires = timer.interval if timer else None
        call.session_refresher = timer.refresher if timer else None
        if timer is None:
            return
        if timer.we_refresh:
            self._timers.start((call, "session-refresh"), now + timer.refresh_after())
        self._timers.start((call, "session-expire"), now + timer.expire_after())
        log.debug("sip.session_timer.armed", call_id=call.call_id, interval=timer.interval,
                  refresher=timer.refresher)

    def _session_timer(self, call: InboundCall, name: str, now: float) -> None:
        leg = self._legs.get(call)
        if leg is None or call.ended:
            return
        if name == "session-refresh":
            self._send_refresh(call, leg, now)
        elif name == "session-expire":
            self._session_expired(call, leg, now)

    def _session_expired(self, call: InboundCall, leg: _Leg, now: float) -> None:
        """RFC 4028 10: no refresh before the session expired -> BYE with a Reason."""
        log.warning("sip.session_timer.expired", call_id=call.call_id,
                    interval=leg.timer.interval if leg.timer else None)
        leg.pending_2xx = None
        self._cancel_call_timers(call)
        self._send_bye(call, leg, SESSION_EXPIRED_REASON, now)
        self._end(call, EndReason.SESSION_EXPIRED)
        self._forget(call)
        self._notify()

    def _send_refresh(self, call: InboundCall, leg: _Leg, now: float) -> None:
        """The gateway refreshes (RFC 4028 7.4): a body-less UPDATE (RFC 3311) when the peer's
        Allow lists UPDATE, else a re-INVITE with our current SDP, version unchanged (RFC 3264 8:
        the session does not change)."""
        if leg.dialog is None or leg.timer is None or leg.refresh_tx is not None:
            return
        if leg.pending_2xx is not None:  # the peer's re-INVITE is still open: try again shortly
            self._timers.start((call, "session-refresh"), now + self._values.t2)
            return
        use_update = "UPDATE" in {m.upper() for m in call.invite.headers.values("Allow")}
        method = "UPDATE" if use_update else "INVITE"
        host, port = self._local_hostport(call.invite, leg.dest)
        branch = new_branch()
        via = f"SIP/2.0/{leg.dest.transport.upper()} {_host(host)}:{port};branch={branch};rport"
        extra = Headers([
            ("Contact", self._contact(call, leg)),
            # In our request we are the UAC: refresher=uac names the gateway (RFC 4028 7.4).
            ("Session-Expires", f"{leg.timer.interval};refresher=uac"),
            ("Min-SE", str(st.MIN_SE_FLOOR)),
            ("Supported", "timer"),
            ("User-Agent", self.server),
        ])
        if method == "INVITE":
            extra.add("Allow", ", ".join(ALLOW))
        request = leg.dialog.build_request(method, via, extra)
        if method == "INVITE" and call.answer_sdp:
            request.headers.add("Content-Type", "application/sdp")
            request.body = call.answer_sdp.encode()
        key = client_key(branch, method)
        tx = Transaction("ict" if method == "INVITE" else "nict", request, leg.dest, self._timers,
                         self._values, key)
        self._client_txs[key] = tx
        leg.refresh_tx = tx
        log.info("sip.session_timer.refresh_sent", call_id=call.call_id,
                 interval=leg.timer.interval, method=method)
        self._run(tx, tx.start_client(bytes(request), now), now)
        self._notify()

    def _reinvite_response(self, tx: Transaction, resp: SipResponse, now: float) -> None:
        """A response to our re-INVITE: 2xx (and its retransmissions) are ACKed by the dialog
        (RFC 3261 13.2.2.4); final responses go on to :meth:`_refresh_result`."""
        if resp.status < 200:
            return
        for call, leg in self._legs.items():
            if leg.reinvite_ack is not None and leg.reinvite_ack[0] is tx:
                if resp.status < 300:  # a retransmitted 2xx: the same ACK again
                    self._transmit(leg.dest, leg.reinvite_ack[1])
                return
            if leg.refresh_tx is tx:
                if resp.status < 300 and leg.dialog is not None:
                    ack = self._dialog_ack(call, leg, tx.request)
                    leg.reinvite_ack = (tx, ack)
                    self._transmit(leg.dest, ack)
                break
        self._refresh_result(tx, resp, now)

    def _dialog_ack(self, call: InboundCall, leg: _Leg, invite: SipRequest) -> bytes:
        """The ACK for a 2xx to our re-INVITE: a new branch, the INVITE's CSeq number (13.2.2.4)."""
        assert leg.dialog is not None
        host, port = self._local_hostport(call.invite, leg.dest)
        via = (f"SIP/2.0/{leg.dest.transport.upper()} {_host(host)}:{port};"
               f"branch={new_branch()};rport")
        ack = leg.dialog.build_request("ACK", via)
        leg.dialog.local_seq -= 1  # an ACK does not take a sequence number of its own
        ack.headers = Headers([(n, f"{invite.cseq[0]} ACK" if n == "CSeq" else v)
                               for n, v in ack.headers.items()])
        return bytes(ack)

    def _refresh_result(self, tx: Transaction, resp: SipResponse | None, now: float) -> None:
        """Our UPDATE's or re-INVITE's outcome: 2xx restarts the timer; 422 retries with the
        peer's Min-SE; 491 (glare) retries after the RFC 3261 14.1 back-off; anything else --
        408, 481 (RFC 3261 12.2.1.2), a timeout -- ends the session with BYE (RFC 4028 10)."""
        found = next(((c, lg) for c, lg in self._legs.items() if lg.refresh_tx is tx), None)
        if found is None:
            return
        call, leg = found
        leg.refresh_tx = None
        if call.ended or leg.timer is None:
            return
        if resp is not None and 200 <= resp.status < 300:
            se = resp.headers.get("Session-Expires")
            if se:
                try:
                    treq = st.parse_request(resp.headers)
                    if treq.interval and treq.interval >= st.MIN_SE_FLOOR:
                        # The response's refresher is relative to our UPDATE: uac = gateway.
                        who = "uac" if treq.refresher == "uas" else "uas"
                        leg.timer = st.TimerAnswer(treq.interval, who, leg.timer.require)
                except st.SessionTimerError:
                    pass
            log.info("sip.session_timer.refreshed", call_id=call.call_id, by="gateway")
            self._arm_session_timer(call, leg, now)
            return
        if resp is not None and resp.status == 491:
            # RFC 3261 14.1 glare: we do not own the Call-ID (the caller chose it), so we
            # wait 2.1-4 s in 10 ms units before trying again.
            delay = 2.1 + secrets.randbelow(191) / 100
            log.info("sip.session_timer.glare", call_id=call.call_id, retry_in=delay)
            self._timers.start((call, "session-refresh"), now + delay)
            return
        if resp is not None and resp.status == 422:
            try:
                min_se = st.parse_request(resp.headers).min_se
            except st.SessionTimerError:
                min_se = leg.timer.interval
            if min_se > leg.timer.interval:
                leg.timer = st.TimerAnswer(min_se, leg.timer.refresher, leg.timer.require)
                self._send_refresh(call, leg, now)
                return
        log.warning("sip.session_timer.refresh_failed", call_id=call.call_id,
                    status=resp.status if resp is not None else None)
        self._session_expired(call, leg, now)

    def _on_ack(self, req: SipRequest, now: float) -> None:
        """ACK for a 2xx: a transaction of its own, handled by the UAS core (13.3.1.4)."""
        try:
            to_tag = req.to_addr.tag or ""
            from_tag = req.from_addr.tag or ""
            cseq = req.cseq[0]
        except ValueError:
            log.info("sip.message.dropped", reason="unusable ACK")
            return
        call = self._dialogs.get((req.call_id, to_tag, from_tag))
        leg = self._legs.get(call) if call is not None else None
        if call is None or leg is None or leg.pending_2xx is None or leg.pending_cseq != cseq:
            log.debug("sip.ack.absorbed", call_id=req.call_id)
            return
        leg.pending_2xx = None
        self._cancel_call_timers(call)
        answer_due, leg.answer_due = leg.answer_due, False  # our 2xx to a bodiless re-INVITE
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self._set_established(leg, True)
            log.info("sip.call.confirmed", call_id=call.call_id)
            self._arm_session_timer(call, leg, now)
            answer_due = call.delayed_offer
        if answer_due:
            problem = self._ack_answer(call, req)
            if problem is not None:
                # RFC 3261 13.3.1.4 / 14.2: the ACK confirmed the dialog; an unusable answer
                # leaves the UAS only BYE (with a Reason saying why, RFC 3326).
                log.warning("sip.ack.answer_refused", call_id=call.call_id, reason=problem)
                self._send_bye(call, leg, f'SIP;cause=488;text={_quote(problem)}', now)
                self._end(call, EndReason.ANSWER_REFUSED)
                self._forget(call)
                return
        if leg.hangup_pending:
            self._send_bye(call, leg, leg.hangup_reason, now)
            self._forget(call)

    def _ack_answer(self, call: InboundCall, ack: SipRequest) -> str | None:
        """Delayed offer or bodiless re-INVITE: hand the ACK's SDP answer to ``call.on_answer``; the reason it cannot
        be used, or None when it was taken (RFC 3264 5: the answer to our 2xx offer)."""
        if call.ended:  # hung up while the 2xx waited: the pending BYE goes out instead
            return None
        if not ack.body:
            return "the ACK carries no SDP answer to our offer"
        if sipinfo.content_type(ack.headers.get("Content-Type")) != "application/sdp":
            return "the ACK's body is not application/sdp"
        try:
            answer = SessionDescription.parse(ack.body)
        except SdpParseError as exc:
            return f"malformed SDP answer: {exc}"
        problem: str | None = None
        if call.on_answer is not None:
            try:
                problem = call.on_answer(call, answer)
            except Exception:
                log.exception("sip.ack.answer_error", call_id=call.call_id)
                problem = "the answer could not be applied"
        if problem is None:
            call.offer = answer
            log.info("sip.ack.answer_taken", call_id=call.call_id)
        return problem

    def _on_bye(self, req: SipRequest, tx: Transaction, now: float) -> None:
        call = self._dialogs.get((req.call_id, req.to_addr.tag or "", req.from_addr.tag or ""))
        if call is None or call.ended:
            self._respond(tx, 481, now)
            return
        leg = self._legs[call]
        cseq = req.cseq[0]
        if leg.dialog and leg.dialog.remote_seq is not None and cseq < leg.dialog.remote_seq:
            self._respond(tx, 500, now, reason="CSeq out of order")
            return
        self._respond(tx, 200, now)
        if call.state in (CallState.OFFERED, CallState.RINGING):
            # BYE on an early dialog (RFC 3261 15): the INVITE is terminated.
            self._respond(leg.tx, 487, now, to_tag=call.local_tag)
        leg.pending_2xx = None
        self._cancel_call_timers(call)
        self._end(call, EndReason.REMOTE_BYE)
        self._forget(call)

    def _on_cancel(self, req: SipRequest, dest: Destination, key: tuple[str, ...],
                   now: float) -> None:
        """RFC 3261 9.2: 200 to a matching CANCEL; 487 to the INVITE if still pending."""
        tx = Transaction("nist", req, dest, self._timers, self._values, key)
        self._server_txs[key] = tx
        invite_key = key[:-1] + ("INVITE",)
        invite_tx = self._server_txs.get(invite_key)
        call = self._invite_calls.get(invite_key)
        if invite_tx is None or call is None:
            self._respond(tx, 481, now)
            return
        self._respond(tx, 200, now, to_tag=call.local_tag)
        if invite_tx.state is State.PROCEEDING and not call.ended:
            self._respond(invite_tx, 487, now, to_tag=call.local_tag)
            self._end(call, EndReason.CANCELLED)
            self._forget(call)

    def _on_options(self, tx: Transaction, now: float) -> None:
        self._respond(tx, 200, now, headers=[
            ("Allow", ", ".join(ALLOW)), ("Accept", "application/sdp"),
            ("Supported", ", ".join(SUPPORTED)),
        ])

    def _on_response(self, resp: SipResponse, now: float) -> None:
        via = resp.top_via
        try:
            method = resp.cseq[1]
        except ValueError:
            method = ""
        tx = self._client_txs.get(client_key(via.branch or "", method)) if via else None
        if tx is None:
            log.info("sip.message.dropped", reason="response matches no transaction",
                     status=resp.status, call_id=resp.call_id)
            return
        inp = (Input.RECV_1XX if resp.status < 200 else
               Input.RECV_2XX if resp.status < 300 and tx.kind == "ict" else Input.RECV_FINAL)
        self._run(tx, tx.fire(inp, now, response=resp), now)

    # ------------------------------------------------------------------ application actions
    def call_ring(self, call: InboundCall) -> None:
        """180 Ringing with our To-tag (RFC 3261 13.3.1.1)."""
        now = self._clock()
        leg = self._legs.get(call)
        if leg is None or call.state not in (CallState.OFFERED, CallState.RINGING):
            log.info("sip.call.action_ignored", action="ring", call_id=call.call_id,
                     state=call.state.value)
            return
        call.state = CallState.RINGING
        self._dialogs[(call.call_id, call.local_tag, call.invite.from_addr.tag or "")] = call
        self._respond(leg.tx, 180, now, to_tag=call.local_tag,
                      headers=[("Contact", self._contact(call, leg))])
        self._notify()

    def call_accept(self, call: InboundCall, answer_sdp: str) -> None:
        """200 OK with the answer; retransmitted until the ACK (RFC 3261 13.3.1.4)."""
        now = self._clock()
        leg = self._legs.get(call)
        if (leg is None or call.state not in (CallState.OFFERED, CallState.RINGING)
                or leg.tx.state is not State.PROCEEDING):
            log.info("sip.call.action_ignored", action="accept", call_id=call.call_id,
                     state=call.state.value)
            return
        leg.dialog = Dialog.from_invite(call.invite, call.local_tag)
        self._dialogs[leg.dialog.id] = call
        call.answer_sdp = answer_sdp
        call.state = CallState.ANSWERED
        if leg.timer_request is not None:
            # When we refresh, a peer whose Allow lists UPDATE gets UPDATE, any other a
            # re-INVITE with the same SDP (RFC 4028 7.4, :meth:`_send_refresh`).
            leg.timer = st.negotiate(leg.timer_request)
        resp = self._respond(leg.tx, 200, now, to_tag=call.local_tag,
                             headers=self._dialog_headers(call, leg) + self._timer_headers(leg),
                             body=answer_sdp.encode("utf-8"), content_type="application/sdp")
        log.info("sip.call.accepted", call_id=call.call_id)
        self._start_2xx(call, leg, bytes(resp), call.invite.cseq[0], now)
        self._notify()

    def call_reject(self, call: InboundCall, status: int, reason: str | None,
                    warning: str | None) -> None:
        """A final error response; the call ends with ``local-hangup``."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject() needs a 3xx-6xx status, not {status}")
        now = self._clock()
        leg = self._legs.get(call)
        if (leg is None or call.state not in (CallState.OFFERED, CallState.RINGING)
                or leg.tx.state is not State.PROCEEDING):
            log.info("sip.call.action_ignored", action="reject", call_id=call.call_id,
                     state=call.state.value)
            return
        headers = []
        if warning:
            headers.append(("Warning", _warning(self._our_host(call.invite, leg.dest), warning)))
        self._respond(leg.tx, status, now, reason=reason, to_tag=call.local_tag, headers=headers)
        log.info("sip.call.rejected", call_id=call.call_id, status=status)
        self._end(call, EndReason.LOCAL_HANGUP)
        self._forget(call)
        self._notify()

    def call_hangup(self, call: InboundCall, reason: str | None) -> None:
        """BYE once the dialog is confirmed; 480 before the answer (RFC 3261 15)."""
        leg = self._legs.get(call)
        if leg is None or call.ended:
            log.info("sip.call.action_ignored", action="hangup", call_id=call.call_id,
                     state=call.state.value)
            return
        if call.state in (CallState.OFFERED, CallState.RINGING):
            self.call_reject(call, 480, None, None)
            return
        now = self._clock()
        if call.state is CallState.ANSWERED:
            # RFC 3261 15: no BYE before the ACK (or the 2xx give-up); it goes out then.
            leg.hangup_pending = True
            leg.hangup_reason = reason
            self._end(call, EndReason.LOCAL_HANGUP)
        else:
            self._send_bye(call, leg, reason, now)
            self._end(call, EndReason.LOCAL_HANGUP)
            self._forget(call)
        self._notify()

    def call_send_info(self, call: InboundCall, content_type: str, body: bytes) -> bool:
        """An INFO inside the confirmed dialog (RFC 6086): a non-INVITE client transaction sent
        along the INVITE's flow, like our BYE. False (nothing sent) before the ACK or after the end.
        The body is not logged (DTMF digits may be a PIN)."""
        leg = self._legs.get(call)
        if leg is None or leg.dialog is None or call.state is not CallState.CONFIRMED:
            log.info("sip.call.action_ignored", action="info", call_id=call.call_id,
                     state=call.state.value)
            return False
        now = self._clock()
        host, port = self._local_hostport(call.invite, leg.dest)
        branch = new_branch()
        via = f"SIP/2.0/{leg.dest.transport.upper()} {_host(host)}:{port};branch={branch};rport"
        info = leg.dialog.build_request("INFO", via, Headers([
            ("Contact", self._contact(call, leg)), ("User-Agent", self.server),
            ("Content-Type", content_type)]))
        info.body = body
        key = client_key(branch, "INFO")
        tx = Transaction("nict", info, leg.dest, self._timers, self._values, key)
        self._client_txs[key] = tx
        log.info("sip.info.sent", call_id=call.call_id, content_type=content_type)
        self._run(tx, tx.start_client(bytes(info), now), now)
        self._notify()
        return True

    # ------------------------------------------------------------------ internals
    def _start_2xx(self, call: InboundCall, leg: _Leg, data: bytes, cseq: int,
                   now: float) -> None:
        leg.pending_2xx = data
        leg.pending_cseq = cseq
        leg.rtx_interval = self._values.t1
        self._timers.start((call, "2xx-retransmit"), now + leg.rtx_interval)
        self._timers.start((call, "2xx-timeout"), now + self._values.transaction_timeout)

    def _call_timer(self, call: InboundCall, name: str, now: float) -> None:
        leg = self._legs.get(call)
        if leg is None or leg.pending_2xx is None:
            return
        if name == "2xx-retransmit":
            self._transmit(leg.dest, leg.pending_2xx)
            leg.rtx_interval = min(2 * leg.rtx_interval, self._values.t2)
            self._timers.start((call, "2xx-retransmit"), now + leg.rtx_interval)
        elif name == "2xx-timeout":
            # RFC 3261 13.3.1.4: no ACK after 64*T1 -> confirm, then BYE to end the session.
            log.warning("sip.transaction.timeout", timer="2xx", call_id=call.call_id)
            leg.pending_2xx = None
            self._cancel_call_timers(call)
            self._send_bye(call, leg, leg.hangup_reason, now)
            self._end(call, EndReason.ACK_TIMEOUT)
            self._forget(call)

    def _cancel_call_timers(self, call: InboundCall) -> None:
        self._timers.cancel((call, "2xx-retransmit"))
        self._timers.cancel((call, "2xx-timeout"))

    def _send_bye(self, call: InboundCall, leg: _Leg, reason: str | None, now: float) -> None:
        """Our BYE: a non-INVITE client transaction sent back along the INVITE's flow.

        It goes to the address the INVITE came from (over the same TCP
        connection), not to a DNS lookup of the remote target (RFC 3263): room
        systems behind NAT are reachable only that way, as with RFC 3581.
        """
        if leg.dialog is None:
            return
        host, port = self._local_hostport(call.invite, leg.dest)
        branch = new_branch()
        via = f"SIP/2.0/{leg.dest.transport.upper()} {_host(host)}:{port};branch={branch};rport"
        extra = [("User-Agent", self.server)]
        if reason:
            extra.append(("Reason", _reason_header(reason)))
        bye = leg.dialog.build_request("BYE", via, Headers(extra))
        key = client_key(branch, "BYE")
        tx = Transaction("nict", bye, leg.dest, self._timers, self._values, key)
        self._client_txs[key] = tx
        log.info("sip.bye.sent", call_id=call.call_id, reason=reason)
        self._run(tx, tx.start_client(bytes(bye), now), now)

    def _end(self, call: InboundCall, reason: EndReason) -> None:
        if call.ended:
            return
        call.state = CallState.ENDED
        call.end_reason = reason
        log.info("sip.call.ended", call_id=call.call_id, reason=reason.value)
        self._events.append(CallEnded(call, reason))

    def _forget(self, call: InboundCall) -> None:
        """Drop the call's dialog state once nothing more is expected for it."""
        leg = self._legs.get(call)
        if leg is not None and leg.pending_2xx is not None:
            return
        gone = self._legs.pop(call, None)
        if gone is not None:
            self._set_established(gone, False)
        for key in [k for k, c in self._dialogs.items() if c is call]:
            del self._dialogs[key]
        self._cancel_call_timers(call)
        self._timers.cancel((call, "session-refresh"))
        self._timers.cancel((call, "session-expire"))

    def _run(self, tx: Transaction, outputs: list, now: float) -> None:  # type: ignore[type-arg]
        for out in outputs:
            if out.kind == "send":
                self._transmit(tx.dest, out.data)
            elif out.kind == "deliver" and out.response is not None:
                if tx.kind == "ict":
                    self._reinvite_response(tx, out.response, now)
                elif out.response.status >= 200 and tx.request.method == "UPDATE":
                    self._refresh_result(tx, out.response, now)
                elif out.response.status >= 200 and tx.request.method == "INFO":
                    log.info("sip.info.completed", status=out.response.status,
                             call_id=tx.request.call_id)
                elif out.response.status >= 200:
                    log.info("sip.bye.completed", status=out.response.status,
                             call_id=tx.request.call_id)
            elif out.kind == "timeout":
                log.warning("sip.transaction.timeout", method=tx.request.method,
                            call_id=tx.request.call_id, state=tx.state.value)
                if tx.request.method in ("UPDATE", "INVITE"):
                    self._refresh_result(tx, None, now)
            elif out.kind == "fail":
                log.warning("sip.transport.error", method=tx.request.method,
                            call_id=tx.request.call_id)
                if tx.request.method in ("UPDATE", "INVITE"):
                    self._refresh_result(tx, None, now)
            elif out.kind == "terminated":
                table = self._client_txs if tx.kind in ("nict", "ict") else self._server_txs
                if table.get(tx.key) is tx:
                    del table[tx.key]
                if tx.kind == "ist":
                    self._invite_calls.pop(tx.key, None)

    def _respond(
        self,
        tx: Transaction,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        """Send a response through its server transaction (RFC 3261 8.2.6)."""
        if to_tag is None and status > 100:
            to_tag = new_tag()  # 8.2.6.2: final responses outside a dialog still get a tag
        resp = make_response(tx.request, status, reason, to_tag=to_tag)
        resp.headers.add("Server", self.server)
        for name, value in headers or ():
            resp.headers.add(name, value)
        if body:
            resp.headers.add("Content-Type", content_type or "application/sdp")
            resp.body = body
        inp = (Input.SEND_1XX if status < 200 else Input.SEND_2XX if status < 300
               else Input.SEND_FINAL)
        self._run(tx, tx.fire(inp, now, data=bytes(resp), response=resp), now)
        log.info("sip.response.sent", status=status, method=tx.request.method,
                 call_id=tx.request.call_id)
        return resp

    def _dialog_headers(self, call: InboundCall, leg: _Leg) -> list[tuple[str, str]]:
        """Headers of a dialog-creating 2xx (RFC 3261 13.3.1.4, 12.1.1)."""
        out = [("Record-Route", rr) for rr in call.invite.headers.get_all("Record-Route")]
        out += [
            ("Contact", self._contact(call, leg)),
            ("Allow", ", ".join(ALLOW)),
            ("Supported", ", ".join(SUPPORTED)),
        ]
        return out

    def _contact(self, call: InboundCall, leg: _Leg) -> str:
        """Our Contact: ``sips:`` (TLS implied, RFC 5630 3.1.3 deprecates ``transport=tls``) for a
        ``sips:`` request over TLS, else ``sip:`` with ``;transport=`` udp, tcp or tls."""
        host, port = self._local_hostport(call.invite, leg.dest)
        user = f"{call.request_uri.user}@" if call.request_uri.user else ""
        scheme = "sips" if call.request_uri.scheme == "sips" else "sip"
        if scheme == "sips" and leg.dest.transport == "tls":
            return f"<sips:{user}{_host(host)}:{port}>"
        return f"<{scheme}:{user}{_host(host)}:{port};transport={leg.dest.transport}>"

    def _local_hostport(self, req: SipRequest, dest: Destination) -> tuple[str, int]:
        host, port = self._listen.get(dest.transport, ("", 5060))
        if host in _UNSPECIFIED_HOSTS:
            host = self.advertised_host or req.uri.host or "127.0.0.1"
        return host.strip("[]"), port

    def _our_host(self, req: SipRequest, dest: Destination) -> str:
        return _host(self._local_hostport(req, dest)[0])

    def _rate_check(self, req: SipRequest, dest: Destination, now: float) -> Verdict:
        """Flood limit for requests that create state: out-of-dialog INVITE and OPTIONS."""
        if self.rate_limiter is None or req.method not in ("INVITE", "OPTIONS"):
            return Verdict.ALLOW
        if req.to_addr.tag:  # parse_message already checked To (RFC 3261 8.1.1.2)
            return Verdict.ALLOW  # in-dialog (re-INVITE, keep-alive OPTIONS)
        verdict = self.rate_limiter.check(dest.addr[0], req.method, now)
        if verdict is not Verdict.ALLOW:
            log.info("sip.request.rate_limited", method=req.method, verdict=verdict.value,
                     transport=dest.transport)
        return verdict

    def _stamp_via(self, req: SipRequest, dest: Destination) -> None:
        """RFC 3261 18.2.1 ``received`` and RFC 3581 4 ``rport`` on the top Via."""
        lines = req.headers.get_all("Via")
        if not lines:
            return
        elements = split_list(lines[0])
        if not elements:
            return
        try:
            via = Via.parse(elements[0])
        except UriError:
            return
        src_host, src_port = dest.addr
        changed = False
        if "rport" in via.params and not via.params["rport"]:
            via.params["rport"] = str(src_port)
            via.params["received"] = src_host
            changed = True
        elif via.host.strip("[]") != src_host:
            via.params["received"] = src_host
            changed = True
        if not changed:
            return
        elements[0] = str(via)
        items = req.headers.items()
        idx = next(i for i, (n, _) in enumerate(items) if n == "Via")
        items[idx] = ("Via", ", ".join(elements))
        req.headers = Headers(items)

    def _transmit(self, dest: Destination, data: bytes) -> None:
        self._out.append(Transmit(data, dest.addr, dest.transport, dest.connection))

    def _notify(self) -> None:
        if self.on_output is not None:
            self.on_output()


def _addr(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return (str(addr[0]), int(addr[1]))


def _host(host: str) -> str:
    """Bracket IPv6 literals for use in URIs and Via (RFC 3261 19.1.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace(
        "\n", " ") + '"'


def _warning(host: str, text: str) -> str:
    """``Warning: 399 <host> "<text>"`` (RFC 3261 20.43, 399 = miscellaneous warning)."""
    return f"399 {host} {_quote(text)}"


def _reason_header(reason: str) -> str:
    """RFC 3326 Reason: a ready value (``Q.850;cause=16``) as is, free text as Q.850 cause 16."""
    head = reason.split(";", 1)[0].strip()
    if ";" in reason and head and " " not in head:
        return reason
    return f"Q.850;cause=16;text={_quote(reason)}"
