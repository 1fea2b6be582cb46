"""The application's view of a SIP call: :class:`InboundCall`, :class:`CallHandler`, :class:`EndReason`.

The application never sees transactions or dialogs.  It is told about a new
call (100 Trying already sent), answers it with ``ring``/``accept``/``reject``
and ends it with ``hangup``; it is told once, through ``call_ended``, when the
call is over, whichever side ended it.  Actions on a call that is already
over (the caller cancelled while the application was still joining the
meeting) are ignored with a log line, because that race is normal.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from sip.sdp import SessionDescription
from sip.uri import SipUri

if TYPE_CHECKING:
    from sip.message import SipRequest


class EndReason(str, Enum):
    """Why a call ended."""

    REMOTE_BYE = "remote-bye"
    CANCELLED = "cancelled"
    ACK_TIMEOUT = "ack-timeout"
    LOCAL_HANGUP = "local-hangup"
    TRANSPORT_ERROR = "transport-error"
    #: No session refresh arrived in time (RFC 4028 10): we sent BYE with a Reason.
    SESSION_EXPIRED = "session-expired"
    #: Delayed offer: the ACK carried no usable answer to our 2xx offer, we sent BYE
    #: with a Reason (RFC 3261 13.3.1.4: the dialog is confirmed, BYE is the only way out).
    ANSWER_REFUSED = "answer-refused"


class CallState(str, Enum):
    """Where the call is, from the UAS side (RFC 3261 13.3 and 12)."""

    OFFERED = "offered"  # INVITE received, 100 Trying sent
    RINGING = "ringing"  # 180 sent (early dialog)
    ANSWERED = "answered"  # 2xx sent, waiting for the ACK (13.3.1.4)
    CONFIRMED = "confirmed"  # ACK received
    ENDED = "ended"


class CallHandler(Protocol):
    """What the application implements to receive calls."""

    def incoming_call(self, call: InboundCall) -> None:
        """A new call; 100 Trying was already sent.  Answer later with the call's methods."""

    def call_ended(self, call: InboundCall, reason: EndReason) -> None:
        """The call is over (called exactly once per call given to ``incoming_call``)."""


class _CallControl(Protocol):
    """The endpoint operations behind a call (implemented by :class:`sip.endpoint.SipEndpoint`)."""

    def call_ring(self, call: InboundCall) -> None: ...

    def call_accept(self, call: InboundCall, answer_sdp: str) -> None: ...

    def call_reject(
        self, call: InboundCall, status: int, reason: str | None, warning: str | None
    ) -> None: ...

    def call_hangup(self, call: InboundCall, reason: str | None) -> None: ...

    def call_send_info(self, call: InboundCall, content_type: str, body: bytes) -> bool: ...


class InboundCall:
    """One incoming INVITE and the dialog it creates."""

    def __init__(
        self,
        control: _CallControl,
        invite: SipRequest,
        *,
        transport: str,
        source: tuple[str, int],
        offer: SessionDescription | None,
        local_tag: str,
    ) -> None:
        self._control = control
        self.invite = invite
        self.call_id: str = invite.call_id
        self.request_uri: SipUri = invite.uri
        frm = invite.from_addr
        self.from_display: str | None = frm.display
        self.from_uri: SipUri = frm.uri
        self.transport: str = transport
        self.source: tuple[str, int] = source
        self.offer: SessionDescription | None = offer
        #: The INVITE had no SDP (RFC 3261 13.2.1): ``accept()`` carries our *offer* and
        #: the ACK the caller's answer, handed to ``on_answer``.
        self.delayed_offer: bool = offer is None
        self.local_tag = local_tag
        self.state = CallState.OFFERED
        self.end_reason: EndReason | None = None
        self.answer_sdp: str | None = None
        #: A new offer inside the confirmed dialog (re-INVITE or UPDATE, RFC 3261 14.2,
        #: RFC 3311 5.2): return the answer SDP, or None to refuse it with 488 (the
        #: session stays as it was).  Unset: the previous answer is repeated (a refresh).
        self.on_offer: Callable[[InboundCall, SessionDescription], str | None] | None = None
        #: Delayed offer: the ACK's answer to the offer we sent in ``accept()``.  Return None
        #: to take it (``offer`` then holds it), or the reason it is unusable: the call
        #: ends with BYE and ``Reason: SIP;cause=488`` naming it.  Unset: any SDP is taken.
        self.on_answer: Callable[[InboundCall, SessionDescription], str | None] | None = None
        #: A re-INVITE without SDP in the confirmed dialog (RFC 3261 14.2): return the offer
        #: our 2xx carries; the ACK's answer then goes to ``on_answer`` like a delayed offer's
        #: (an ACK without a usable answer ends the call with BYE).  Unset: ``answer_sdp``.
        self.on_offer_request: Callable[[InboundCall], str] | None = None
        #: The negotiated session interval in seconds (RFC 4028), None without session timers.
        self.session_expires: int | None = None
        #: Who refreshes the session: ``"uac"`` (the caller) or ``"uas"`` (the gateway).
        self.session_refresher: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the call is over."""
        return self.state is CallState.ENDED

    def ring(self) -> None:
        """Send 180 Ringing (with our To-tag: an early dialog, RFC 3261 13.3.1.1)."""
        self._control.call_ring(self)

    def accept(self, answer_sdp: str) -> None:
        """Send 200 OK with ``answer_sdp``; it is retransmitted until the ACK (13.3.1.4).

        For a ``delayed_offer`` call ``answer_sdp`` is our offer (RFC 3264 5)."""
        self._control.call_accept(self, answer_sdp)

    def reject(self, status: int, reason: str | None = None, warning: str | None = None) -> None:
        """Send a final error response; ``warning`` becomes ``Warning: 399 <host> "<text>"``."""
        self._control.call_reject(self, status, reason, warning)

    def hangup(self, reason: str | None = None) -> None:
        """End the call: BYE once answered (with ``Reason:`` if given), 480 before."""
        self._control.call_hangup(self, reason)

    def send_info(self, content_type: str, body: bytes) -> bool:
        """Send an in-dialog INFO (RFC 6086) with this body, e.g. ``application/dtmf-relay``
        digits toward a caller without telephone-event; False unless the dialog is confirmed."""
        return self._control.call_send_info(self, content_type, body)

    def __repr__(self) -> str:
        return f"InboundCall(call_id={self.call_id!r}, state={self.state.value})"
