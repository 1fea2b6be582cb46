"""SIP transactions (RFC 3261 17, RFC 6026): every state machine as one table, here.

Four machines: a UAS that also sends its own BYE and refreshes sessions by re-INVITE needs

* INVITE server transaction (17.2.1 fig. 7, with RFC 6026's Accepted state),
* non-INVITE server transaction (17.2.2 fig. 8),
* non-INVITE client transaction (17.1.2 fig. 6),
* INVITE client transaction (17.1.1 fig. 5, with RFC 6026's Accepted state and Timer M): the
  transaction ACKs 300-699 itself; a 2xx and its retransmissions go to the TU, whose dialog
  ACKs them (RFC 3261 13.2.2.4).

Each table maps (state, input) to (next state, actions).  A transaction only
stores the last message it sent and its timers; the owner (the endpoint) moves
bytes and hands inputs in.  An input missing from a table is absorbed (e.g. a
retransmitted request while in Trying, 17.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sip.message import SipRequest, SipResponse
from sip.timers import TimerQueue, TimerValues


class State(str, Enum):
    """Transaction states, named as RFC 3261 17 and RFC 6026 name them."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(str, Enum):
    """What can happen to a transaction."""

    REQUEST = "request retransmission"
    ACK = "ACK"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    RECV_1XX = "1xx received"
    RECV_FINAL = "final response received"
    RECV_2XX = "2xx received"
    TRANSPORT_ERROR = "transport error"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_M = "Timer M"


class Action(str, Enum):
    """What a transition does (executed in order)."""

    SEND = "send the new message"
    RESEND = "retransmit the last message"
    START_E = "start Timer E (T1, unreliable only)"
    BACKOFF_E = "restart Timer E, interval doubled up to T2"
    SLOW_E = "restart Timer E at T2"
    START_F = "start Timer F (64*T1)"
    START_G = "start Timer G (T1, unreliable only)"
    BACKOFF_G = "restart Timer G, interval doubled up to T2"
    START_H = "start Timer H (64*T1)"
    START_I = "start Timer I (T4, 0 on reliable)"
    START_J = "start Timer J (64*T1, 0 on reliable)"
    START_K = "start Timer K (T4, 0 on reliable)"
    START_L = "start Timer L (64*T1)"
    STOP_TIMERS = "stop every timer"
    DELIVER = "pass the response to the TU"
    TIMEOUT = "tell the TU the transaction timed out"
    FAIL = "tell the TU about the transport error"
    START_A = "start Timer A (T1, unreliable only)"
    BACKOFF_A = "restart Timer A, interval doubled (no cap, 17.1.1.2)"
    START_B = "start Timer B (64*T1)"
    SEND_ACK = "send the ACK for a 300-699 (17.1.1.3)"
    START_D = "start Timer D (32 s, 0 on reliable)"
    START_M = "start Timer M (64*T1, RFC 6026 8.4)"


S, I, A = State, Input, Action
Table = dict[tuple[State, Input], tuple[State, tuple[Action, ...]]]

#: RFC 3261 17.2.1 (figure 7) as amended by RFC 6026 7.1 (Accepted, Timer L).
#: Initial state: Proceeding (the endpoint sends 100 Trying right away).
INVITE_SERVER: Table = {
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RESEND,)),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, (A.SEND, A.START_L)),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_G, A.START_H)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, (A.RESEND,)),
    (S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, (A.SEND,)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, (A.STOP_TIMERS,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RESEND,)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (A.RESEND, A.BACKOFF_G)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (A.STOP_TIMERS, A.START_I)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (A.STOP_TIMERS, A.TIMEOUT)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, (A.STOP_TIMERS,)),
}

#: RFC 3261 17.2.2 (figure 8).  Initial state: Trying.
NON_INVITE_SERVER: Table = {
    (S.TRYING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.TRYING, I.SEND_2XX): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.TRYING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RESEND,)),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.PROCEEDING, I.SEND_FINAL): (S.COMPLETED, (A.SEND, A.START_J)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RESEND,)),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, (A.STOP_TIMERS,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
}

#: RFC 3261 17.1.2 (figure 6).  Initial state: Trying (entered by sending the request).
NON_INVITE_CLIENT: Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (A.RESEND, A.BACKOFF_E)),
    (S.TRYING, I.RECV_1XX): (S.PROCEEDING, (A.DELIVER,)),
    (S.TRYING, I.RECV_FINAL): (S.COMPLETED, (A.STOP_TIMERS, A.DELIVER, A.START_K)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (A.STOP_TIMERS, A.TIMEOUT)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (A.RESEND, A.SLOW_E)),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (A.DELIVER,)),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, (A.STOP_TIMERS, A.DELIVER, A.START_K)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (A.STOP_TIMERS, A.TIMEOUT)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, (A.STOP_TIMERS,)),
}

#: RFC 3261 17.1.1 (figure 5) as amended by RFC 6026 7.2 (Accepted, Timer M).
#: Initial state: Calling (entered by sending the INVITE).
INVITE_CLIENT: Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (A.RESEND, A.BACKOFF_A)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (A.STOP_TIMERS, A.TIMEOUT)),
    (S.CALLING, I.RECV_1XX): (S.PROCEEDING, (A.STOP_TIMERS, A.START_B, A.DELIVER)),
    (S.CALLING, I.RECV_2XX): (S.ACCEPTED, (A.STOP_TIMERS, A.DELIVER, A.START_M)),
    (S.CALLING, I.RECV_FINAL): (S.COMPLETED, (A.STOP_TIMERS, A.SEND_ACK, A.DELIVER, A.START_D)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
    (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (A.DELIVER,)),
    (S.PROCEEDING, I.RECV_2XX): (S.ACCEPTED, (A.STOP_TIMERS, A.DELIVER, A.START_M)),
    (S.PROCEEDING, I.RECV_FINAL): (S.COMPLETED, (A.STOP_TIMERS, A.SEND_ACK, A.DELIVER, A.START_D)),
    (S.PROCEEDING, I.TIMER_B): (S.TERMINATED, (A.STOP_TIMERS, A.TIMEOUT)),
    (S.ACCEPTED, I.RECV_2XX): (S.ACCEPTED, (A.DELIVER,)),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, (A.STOP_TIMERS,)),
    (S.COMPLETED, I.RECV_FINAL): (S.COMPLETED, (A.RESEND,)),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, (A.STOP_TIMERS,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.STOP_TIMERS, A.FAIL)),
}

_TIMER_INPUT = {
    "E": I.TIMER_E, "F": I.TIMER_F, "G": I.TIMER_G, "H": I.TIMER_H, "I": I.TIMER_I,
    "J": I.TIMER_J, "K": I.TIMER_K, "L": I.TIMER_L,
    "A": I.TIMER_A, "B": I.TIMER_B, "D": I.TIMER_D, "M": I.TIMER_M,
}

#: Timer D on an unreliable transport: "at least 32 seconds" (RFC 3261 17.1.1.2).
TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True)
class Destination:
    """Where a transaction's messages go: address, transport and (TCP) connection id."""

    addr: tuple[str, int]
    transport: str
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        """TCP/TLS: no retransmissions below the TU (RFC 3261 17.1.1.2, 17.2.1)."""
        return self.transport != "udp"


@dataclass(frozen=True)
class TxOutput:
    """Something the endpoint must do for a transaction: send bytes, deliver or report."""

    kind: str  # "send" | "deliver" | "timeout" | "fail" | "terminated"
    data: bytes = b""
    response: SipResponse | None = None


def server_key(request: SipRequest) -> tuple[str, ...]:
    """Server transaction matching (RFC 3261 17.2.3), with the RFC 2543 fallback.

    With a magic-cookie branch: (branch, sent-by, method) where ACK matches the
    INVITE.  Otherwise a cheap RFC 2543 stand-in: Call-ID, From tag, CSeq
    number, top Via and method.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    via = request.top_via
    branch = via.branch if via else None
    if via and branch and branch.startswith("z9hG4bK") and len(branch) > 7:
        return ("3261", branch, f"{via.host}:{via.port or ''}", method)
    try:
        from_tag = request.from_addr.tag or ""
        cseq = str(request.cseq[0])
    except ValueError:
        from_tag, cseq = "", ""
    top = str(via) if via else ""
    if via is not None:
        # received/rport are added by us on arrival; they are not part of the identity.
        top = f"{via.transport} {via.host}:{via.port} {branch}"
    return ("2543", request.call_id, from_tag, cseq, top, method)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """Client transaction matching (RFC 3261 17.1.3): top Via branch and CSeq method."""
    return (branch, method)


class Transaction:
    """One transaction: its table, state, last message, destination and timers."""

    def __init__(
        self,
        kind: str,
        request: SipRequest,
        dest: Destination,
        timers: TimerQueue,
        values: TimerValues,
        key: tuple[str, ...],
    ) -> None:
        self.kind = kind
        self.table = {"ist": INVITE_SERVER, "nist": NON_INVITE_SERVER,
                      "nict": NON_INVITE_CLIENT, "ict": INVITE_CLIENT}[kind]
        self.state = {"ist": S.PROCEEDING, "nist": S.TRYING, "nict": S.TRYING,
                      "ict": S.CALLING}[kind]
        self.request = request
        self.dest = dest
        self.key = key
        self.last: bytes | None = None
        self.last_response: SipResponse | None = None
        self._timers = timers
        self._values = values
        self._interval_e = values.t1
        self._interval_g = values.t1
        self._interval_a = values.t1

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over and can be forgotten."""
        return self.state is S.TERMINATED

    def start_client(self, data: bytes, now: float) -> list[TxOutput]:
        """Send the request of a client transaction and arm Timers E and F (17.1.2.2), or for
        an INVITE Timers A and B (17.1.1.2)."""
        self.last = data
        retransmit, give_up = ("A", "B") if self.kind == "ict" else ("E", "F")
        if not self.dest.reliable:
            self._arm(retransmit, now + self._values.t1)
        self._arm(give_up, now + self._values.transaction_timeout)
        return [TxOutput("send", data)]

    def timer_fired(self, name: str, now: float) -> list[TxOutput]:
        """Feed a timer named as RFC 3261 names it."""
        return self.fire(_TIMER_INPUT[name], now)

    def fire(
        self, inp: Input, now: float, data: bytes | None = None,
        response: SipResponse | None = None,
    ) -> list[TxOutput]:
        """Apply one input; return what the endpoint must do."""
        entry = self.table.get((self.state, inp))
        if entry is None:
            return []
        new_state, actions = entry
        self.state = new_state
        out: list[TxOutput] = []
        t = self._values
        for action in actions:
            if action is A.SEND and data is not None:
                self.last = data
                self.last_response = response
                out.append(TxOutput("send", data))
            elif action is A.RESEND and self.last is not None:
                out.append(TxOutput("send", self.last))
            elif action is A.START_G and not self.dest.reliable:
                self._arm("G", now + self._interval_g)
            elif action is A.BACKOFF_G:
                self._interval_g = min(2 * self._interval_g, t.t2)
                self._arm("G", now + self._interval_g)
            elif action is A.BACKOFF_E:
                self._interval_e = min(2 * self._interval_e, t.t2)
                self._arm("E", now + self._interval_e)
            elif action is A.SLOW_E:
                self._arm("E", now + t.t2)
            elif action is A.START_H:
                self._arm("H", now + t.transaction_timeout)
            elif action is A.START_L:
                self._arm("L", now + t.transaction_timeout)
            elif action is A.START_I:
                self._arm("I", now + (0.0 if self.dest.reliable else t.t4))
            elif action is A.START_J:
                self._arm("J", now + (0.0 if self.dest.reliable else t.transaction_timeout))
            elif action is A.START_K:
                self._arm("K", now + (0.0 if self.dest.reliable else t.t4))
            elif action is A.BACKOFF_A:
                self._interval_a *= 2
                self._arm("A", now + self._interval_a)
            elif action is A.START_B:
                self._arm("B", now + t.transaction_timeout)
            elif action is A.START_M:
                self._arm("M", now + t.transaction_timeout)
            elif action is A.START_D:
                self._arm("D", now + (0.0 if self.dest.reliable else TIMER_D_UNRELIABLE))
            elif action is A.SEND_ACK and response is not None:
                self.last = bytes(ack_for_error(self.request, response))
                out.append(TxOutput("send", self.last))
            elif action is A.STOP_TIMERS:
                for name in _TIMER_INPUT:
                    self._timers.cancel((self, name))
            elif action is A.DELIVER and response is not None:
                out.append(TxOutput("deliver", response=response))
            elif action is A.TIMEOUT:
                out.append(TxOutput("timeout"))
            elif action is A.FAIL:
                out.append(TxOutput("fail"))
        if self.state is S.TERMINATED:
            out.append(TxOutput("terminated"))
        return out

    def _arm(self, name: str, deadline: float) -> None:
        self._timers.start((self, name), deadline)


def ack_for_error(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK an INVITE client transaction sends for a 300-699 (RFC 3261 17.1.1.3): the
    INVITE's Request-URI, top Via, Call-ID, From, Route and CSeq number; the response's To."""
    ack = SipRequest("ACK", invite.uri)
    h = ack.headers
    h.add("Via", invite.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("From", invite.headers.get("From") or "")
    h.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq[0]} ACK")
    return ack
