"""Admission: may this call join this meeting, and under which rule?

A pure function of the policy and what the call offers, so it is trivially
testable and every outcome can be explained: each :class:`Admit` or
:class:`Refuse` names the meeting, the rule (``meetings."1001".legacy_media=require-srtp``)
and, for refusals, the SIP status, reason phrase and the text the SIP layer puts in
``Warning: 399 <host> "<text>"`` so the far end's operator sees *why*.

Rules are checked in this order, the first that refuses wins:

1. the meeting id must be one a meeting can have (else 404);
2. the meeting must be configured, or ``unknown_meetings: defaults`` (else 404);
3. the call's protocol must be in the meeting's ``protocols`` (else 403);
4. with ``signaling: tls-required`` the call must have come over TLS (else 403);
5. the caller's source address must be in ``allowed_networks`` when set (else 403);
6. a source locked out by ``pin_attempts`` is refused (403); a wrong ``pin`` is refused (403);
   a missing one admits with ``pin_required`` (the IVR asks for it);
7. ``max_participants``: a full meeting refuses (486 Busy Here);
8. the offered media security must satisfy ``legacy_media`` (else 488).

``lobby`` and ``pin_required`` do not refuse: the :class:`Admit` says the caller must wait
(or enter a PIN) before joining, and the call controller does that.

The legacy leg carries plain RTP and SDES-SRTP (RFC 4568); DTLS-SRTP toward room
systems is not implemented yet.  ``require-srtp`` admits an SDES offer and refuses
plain and DTLS-only ones; whether the offered keys are actually usable (suite, MKI,
lifetime) is checked when the audio is chosen (``sip.offer_answer.choose_audio``),
which refuses with 488 too.  Every mode uses SRTP whenever it is offered (never a
downgrade); ``prefer-srtp`` says in the decision's notes (and the call's log) when a
call is plain RTP.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any, Literal

from gateway.policy import MeetingPolicy, Policy, is_meeting_id

CallProtocol = Literal["sip", "h323"]
MediaSecurity = Literal["plain", "sdes", "dtls"]

#: What the legacy leg can do in this release; the decision texts follow from it.
SDES_SUPPORTED = True
LEGACY_DTLS_SUPPORTED = False

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _shown(meeting: str) -> str:
    """The meeting id as it may appear in a Warning header and a log line: printable ASCII,
    bounded length (unknown ids come straight from the caller's Request-URI)."""
    text = _UNPRINTABLE.sub("?", meeting)
    return text if len(text) <= 64 else text[:61] + "..."


@dataclass(frozen=True)
class Admit:
    """The call may join.  ``rule`` is the media-security rule it was admitted under;
    ``notes`` say what the caller will get when that differs from what the rule hopes for."""

    meeting: str
    policy: MeetingPolicy
    rule: str
    protocol: CallProtocol
    transport: str
    media_security: MediaSecurity
    notes: tuple[str, ...] = ()
    #: The meeting has a PIN and none was dialled: ask for it (IVR) before joining.
    pin_required: bool = False
    #: ``lobby: true``: the caller waits until admitted through the control API.
    lobby: bool = False

    def explain(self) -> str:
        p = self.policy
        how = "configured meeting" if p.configured else "unknown meeting, unknown_meetings=defaults"
        if p.profile is not None:
            how += f", profile {p.profile}"
        text = (f"admit: meeting '{_shown(self.meeting)}' ({how}); {self.protocol} over "
                f"{self.transport} allowed by {p.rule('protocols')}; {self.media_security} media "
                f"accepted by {self.rule}")
        if p.allowed_networks is not None:
            text += f"; source allowed by {p.rule('allowed_networks')}"
        if self.pin_required:
            text += f"; PIN to be entered first ({p.rule('pin')}, {p.rule('pin_attempts')})"
        elif p.pin is not None:
            text += f"; PIN accepted ({p.rule('pin')})"
        if self.lobby:
            text += f"; waits in the lobby until admitted ({p.rule('lobby')})"
        if p.max_participants is not None:
            text += f"; limit {p.rule('max_participants')}"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text


@dataclass(frozen=True)
class Refuse:
    """The call may not join.  ``sip_status``/``reason`` go in the final response,
    ``warning`` in its ``Warning: 399`` header; ``policy`` is None when the meeting is unknown."""

    meeting: str
    sip_status: int
    reason: str
    rule: str
    warning: str
    protocol: CallProtocol
    transport: str
    media_security: MediaSecurity
    policy: MeetingPolicy | None = None

    def explain(self) -> str:
        return (f"refuse {self.sip_status} {self.reason}: meeting '{_shown(self.meeting)}', "
                f"{self.protocol} over {self.transport} with {self.media_security} media; "
                f"rule {self.rule}: {self.warning}")


Decision = Admit | Refuse


def decide(policy: Policy, *, meeting: str, protocol: CallProtocol, transport: str,
           media_security: MediaSecurity, source: str | None = None, pin: str | None = None,
           locked_out: bool = False, participants: int | None = None) -> Admit | Refuse:
    """Decide whether a call to ``meeting`` may join (see the module docstring for the order).

    ``source`` is the caller's IP address (None: not checked, e.g. ``policy explain`` without
    ``--source``); ``pin`` what the caller dialled or entered; ``locked_out`` whether its source
    used up ``pin_attempts`` (:class:`gateway.pinlock.PinAttempts`); ``participants`` how many are
    in the meeting already (None: not checked).  The PIN is compared, never put in any text.
    """
    shown = _shown(meeting)
    transport = transport.lower()

    def refuse(status: int, reason: str, rule: str, warning: str,
               mp: MeetingPolicy | None = None) -> Refuse:
        return Refuse(meeting=meeting, sip_status=status, reason=reason, rule=rule, warning=warning,
                      protocol=protocol, transport=transport, media_security=media_security, policy=mp)

    if not is_meeting_id(meeting):
        return refuse(404, "Not Found", "meeting-id",
                      f"'{shown}' is not a meeting id (1-64 letters, digits, '.', '_' or '-')")
    mp = policy.for_meeting(meeting)
    if mp is None:
        return refuse(404, "Not Found", "unknown_meetings=reject",
                      f"meeting '{shown}' is not configured on this gateway "
                      f"(rule unknown_meetings=reject)")
    if not mp.allows(protocol):
        rule = mp.rule("protocols")
        return refuse(403, "Forbidden", rule,
                      f"meeting '{shown}' does not accept {protocol} calls (rule {rule})", mp)
    if mp.signaling == "tls-required" and transport != "tls":
        rule = mp.rule("signaling")
        return refuse(403, "Forbidden", rule,
                      f"meeting '{shown}' accepts {protocol} calls over TLS only, this one came "
                      f"over {transport.upper()} (rule {rule})", mp)
    if source is not None and not mp.allows_source(source):
        rule = mp.rule("allowed_networks")
        return refuse(403, "Forbidden", rule,
                      f"meeting '{shown}' does not accept calls from this network (rule {rule})", mp)
    pin_required = False
    if mp.pin is not None:
        if locked_out:
            rule = mp.rule("pin_attempts")
            return refuse(403, "Forbidden", rule,
                          f"meeting '{shown}': too many wrong PINs from this caller, try again "
                          f"later (rule {rule})", mp)
        if pin is None:
            pin_required = True
        elif not hmac.compare_digest(pin.encode(), mp.pin.encode()):
            rule = mp.rule("pin")
            return refuse(403, "Forbidden", rule, f"meeting '{shown}': wrong PIN (rule {rule})", mp)
    if mp.max_participants is not None and participants is not None \
            and participants >= mp.max_participants:
        rule = mp.rule("max_participants")
        return refuse(486, "Busy Here", rule, f"meeting '{shown}' is full (rule {rule})", mp)
    extra: dict[str, Any] = {"pin_required": pin_required, "lobby": mp.lobby}

    rule = mp.rule("legacy_media")
    if mp.legacy_media == "require-srtp":
        if media_security == "plain":
            why = "requires encrypted media (SRTP) but the offer is plain RTP"
        elif media_security == "sdes" and not SDES_SUPPORTED:  # pragma: no cover - kept for builds without SRTP
            why = ("requires encrypted media and the offer is SDES-SRTP, "
                   "which this gateway cannot carry")
        elif media_security == "dtls" and not LEGACY_DTLS_SUPPORTED:
            why = ("requires encrypted media and the offer is DTLS-SRTP only; this gateway "
                   "takes SDES-SRTP (a=crypto) from SIP/H.323 endpoints, not DTLS-SRTP yet")
        else:
            return Admit(meeting=meeting, policy=mp, rule=rule, protocol=protocol,
                         transport=transport, media_security=media_security, **extra)
        return refuse(488, "Not Acceptable Here", rule, f"meeting '{shown}' {why} (rule {rule})", mp)

    notes: list[str] = []
    if media_security == "dtls":
        notes.append("DTLS-SRTP toward SIP/H.323 endpoints not supported yet: media will be plain "
                     "RTP if the offer also allows it")
    elif media_security == "plain" and mp.legacy_media == "prefer-srtp":
        notes.append("prefer-srtp: the offer is plain RTP, admitted unencrypted")
    return Admit(meeting=meeting, policy=mp, rule=rule, protocol=protocol, transport=transport,
                 media_security=media_security, notes=tuple(notes), **extra)
