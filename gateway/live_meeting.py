"""Operator edits of a running meeting: lock, a PIN changed after people joined, muted callers.

The policy file says how a meeting *starts*; an operator steering a meeting in progress (the
control API, scope ``operate``) must not have to edit it, and what they set must not outlive the
meeting.  :class:`LiveOverrides` holds exactly that, per meeting id, shared by the SIP and H.323
controllers (like :class:`gateway.pinlock.PinAttempts`):

* ``locked``: new legacy callers are refused (rule ``operator.lock``); those in stay;
* ``pin``: replaces the policy's PIN for new callers and for callers still in the IVR (their next
  entry is checked against it); joined callers stay.  Held in memory only, never logged, and out
  of every repr.

Both go when the meeting ends: :meth:`LiveOverrides.prune` drops every meeting ``is_live`` no
longer reports (the controllers call it whenever a call leaves; every read prunes first), so a
meeting id reused tomorrow starts from its policy again (privacy: no PIN lingers).

Muting a legacy caller (:func:`set_muted`) replaces what its leg forwards to the core with silence
of the same length, so the core's mix loses the voice while the WebRTC track keeps its pacing; the
caller keeps hearing the meeting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from gateway.admission import Admit, Refuse, decide
from gateway.policy import Policy

log = structlog.get_logger("gateway.live_meeting")

#: The rule a locked meeting's refusals name (SIP ``Warning:``, H.323 Display, logs).
LOCK_RULE = "operator.lock"
#: Where an operator-set PIN comes from, as ``MeetingPolicy.rule("pin")`` shows it.
PIN_ORIGIN = "operator.pin"
#: A PIN the API accepts: what a keypad can type, bounded.
PIN_DIGITS = range(1, 17)


class InvalidPin(ValueError):
    """The new PIN is not 1-16 decimal digits."""


@dataclass
class _Edits:
    locked: bool = False
    pin: str | None = field(default=None, repr=False)


class LiveOverrides:
    """Per-meeting operator edits; ``is_live(meeting)`` says whether the meeting still runs."""

    def __init__(self, is_live: Callable[[str], bool] | None = None) -> None:
        self.is_live: Callable[[str], bool] = is_live if is_live is not None else (lambda _m: True)
        self._edits: dict[str, _Edits] = {}

    def __repr__(self) -> str:  # never the PINs
        return f"LiveOverrides(meetings={len(self._edits)})"

    # -- edits ------------------------------------------------------------------------------------

    def set_locked(self, meeting: str, locked: bool) -> None:
        self._edit(meeting).locked = locked
        self._tidy(meeting)

    def locked(self, meeting: str) -> bool:
        self.prune()
        edits = self._edits.get(meeting)
        return edits is not None and edits.locked

    def set_pin(self, meeting: str, pin: str) -> None:
        """Replace ``meeting``'s PIN until it ends (raises :class:`InvalidPin`)."""
        if not (pin.isascii() and pin.isdigit() and len(pin) in PIN_DIGITS):
            raise InvalidPin("the PIN must be 1-16 digits")
        self._edit(meeting).pin = pin

    def has_pin(self, meeting: str) -> bool:
        self.prune()
        edits = self._edits.get(meeting)
        return edits is not None and edits.pin is not None

    def forget(self, meeting: str) -> None:
        """The meeting ended: drop whatever was set for it."""
        if self._edits.pop(meeting, None) is not None:
            log.info("meeting.overrides_dropped", meeting=meeting)

    def prune(self) -> None:
        """Drop the edits of every meeting that no longer runs."""
        for meeting in [m for m in self._edits if not self.is_live(m)]:
            self.forget(meeting)

    def _edit(self, meeting: str) -> _Edits:
        return self._edits.setdefault(meeting, _Edits())

    def _tidy(self, meeting: str) -> None:
        edits = self._edits.get(meeting)
        if edits is not None and not edits.locked and edits.pin is None:
            del self._edits[meeting]

    # -- admission --------------------------------------------------------------------------------

    def effective_policy(self, policy: Policy, meeting: str) -> Policy:
        """``policy`` with ``meeting``'s PIN replaced by the operator's, when one is set."""
        self.prune()
        edits = self._edits.get(meeting)
        if edits is None or edits.pin is None:
            return policy
        mp = policy.for_meeting(meeting)
        if mp is None:
            return policy
        mp = dataclasses.replace(mp, pin=edits.pin, origins={**mp.origins, "pin": PIN_ORIGIN})
        return dataclasses.replace(policy, meetings={**policy.meetings, meeting: mp})

    def decide(self, policy: Policy, *, meeting: str, **kwargs: Any) -> Admit | Refuse:
        """:func:`gateway.admission.decide` with the meeting's live edits applied: the operator's
        PIN, and a lock that refuses (403, rule ``operator.lock``) whatever the policy admits."""
        decision = decide(self.effective_policy(policy, meeting), meeting=meeting, **kwargs)
        if not self.locked(meeting) or decision.policy is None:
            return decision
        return Refuse(meeting=meeting, sip_status=403, reason="Forbidden", rule=LOCK_RULE,
                      warning=f"meeting '{meeting}' is locked by operator (rule {LOCK_RULE})",
                      protocol=decision.protocol, transport=decision.transport,
                      media_security=decision.media_security, policy=decision.policy)


def set_muted(session: Any, muted: bool) -> None:
    """Stop (or resume) forwarding a legacy caller's audio to the core: silence of the same length
    goes instead, so the published track keeps its clock.  What the caller hears is untouched."""
    legacy, webrtc = session.legacy, session.webrtc
    legacy.on_audio = (lambda pcm: webrtc.feed(np.zeros_like(pcm))) if muted else webrtc.feed
