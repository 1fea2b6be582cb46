"""Dial strings: which meeting (and PIN) a caller asked for, for SIP and H.323 alike.

One parser for both protocols so ``1000*4321`` means the same over SIP and H.323:

* ``meeting`` (``sip:1000@host``, called number ``1000``);
* ``meeting.pin``, ``meeting*pin``, ``meeting#pin`` (H.323 ``dialledDigits`` style);
* ``IP##meeting`` (H.323 endpoints dialling an address), ``meeting@host`` (h323-ID / URI text);
* nothing, or a configured IVR user such as ``ivr``: the caller reaches the IVR, which asks for
  the meeting id (and the PIN) by DTMF.

``.`` is also a legal meeting-id character (``board.room``), so ``meeting.pin`` is only split when
the whole text is not itself a meeting the caller can reach (``is_meeting``, usually
``policy.meetings.__contains__``) and what follows the last ``.`` is all digits.

The PIN is never logged: :class:`DialString` keeps it out of its repr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: Users that mean "take me to the IVR" (compared case-insensitively); "" always does.
DEFAULT_IVR_USERS: tuple[str, ...] = ("ivr",)


@dataclass(frozen=True)
class DialString:
    """What the caller dialled.  ``meeting == ""`` means the IVR should ask for it; ``pin`` is
    None when no PIN was dialled (``"1000#"`` counts as none)."""

    meeting: str
    pin: str | None = field(default=None, repr=False)

    @property
    def to_ivr(self) -> bool:
        """The caller dialled only the host (or the IVR user): ask for the meeting id."""
        return self.meeting == ""


def parse_dial_string(text: str, *, is_meeting: Callable[[str], bool] | None = None,
                      ivr_users: Iterable[str] = DEFAULT_IVR_USERS) -> DialString:
    """Split ``text`` into meeting and PIN (see the module docstring for the forms)."""
    text = text.strip()
    if "##" in text:  # IP##meeting
        text = text.split("##", 1)[1]
    text = text.split("@", 1)[0].strip()
    if text.lower() in {u.lower() for u in ivr_users}:
        return DialString("")
    for sep in ("*", "#"):
        if sep in text:
            meeting, pin = text.split(sep, 1)
            return DialString(meeting.strip(), pin.strip().rstrip("#") or None)
    if "." in text and not (is_meeting is not None and is_meeting(text)):
        meeting, _, pin = text.rpartition(".")
        if meeting and pin.isdigit():
            return DialString(meeting, pin)
    return DialString(text)
