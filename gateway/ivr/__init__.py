"""The IVR: spoken prompts and DTMF entry for callers who dialled only the host (or the IVR user),
or a meeting that needs a PIN they did not dial.

Split in two so the logic is testable without sockets:

* :func:`run_ivr` is the conversation (ask for the meeting, then the PIN, with a limited number
  of tries) over an :class:`IvrIO` (play a prompt, wait for a ``#``-terminated entry) and a
  ``check`` callback that asks the policy (and counts wrong PINs: :class:`gateway.pinlock.PinAttempts`);
* :class:`LegIO` is that IO on a running legacy RTP leg (prompts from ``prompts/*.wav``,
  generated once by ``make_prompts.sh``; digits by RFC 4733 or SIP INFO, fed to :meth:`LegIO.digit`).

Digits are never logged (they may be a PIN); only the event that an entry was made.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from gateway.admission import Admit, Refuse

log = structlog.get_logger("gateway.ivr")

PROMPTS_DIR = Path(__file__).with_name("prompts")
PROMPT_RATE = 8000
PROMPTS = ("enter_meeting", "enter_pin", "wrong_pin", "unknown_meeting", "joining", "lobby",
           "goodbye")
#: How many times the IVR asks for a meeting id (and waits for any entry) before hanging up.
MEETING_ATTEMPTS = 3
#: Seconds to wait for an entry after a prompt before asking again.
ENTRY_TIMEOUT = 10.0
#: Longest entry kept; more digits end the entry (nobody types a 33-digit meeting id).
MAX_ENTRY = 32


@dataclass(frozen=True)
class IvrHangup:
    """The IVR gave up: hang up with ``reason`` (the BYE's ``Reason:`` text; names the rule)."""

    reason: str
    rule: str


class IvrIO(Protocol):
    """What the conversation needs from a call."""

    async def play(self, prompt: str) -> None: ...

    async def entry(self, timeout: float) -> str | None: ...


#: ``check(meeting, pin)`` -> the policy's decision (pin None: not entered yet).
Check = Callable[[str, "str | None"], "Admit | Refuse"]


def _pin_refusal(d: Refuse) -> bool:
    return d.policy is not None and d.rule == d.policy.rule("pin")


async def run_ivr(io: IvrIO, check: Check, *, meeting: str = "",
                  first: Admit | Refuse | None = None, attempts: int = MEETING_ATTEMPTS,
                  timeout: float = ENTRY_TIMEOUT) -> Admit | IvrHangup:
    """Ask for what is missing (meeting id, then PIN) until ``check`` admits, or give up.

    ``meeting``/``first``: the meeting already dialled and its decision (PIN missing); empty to
    ask for the meeting first.  Wrong PINs are counted by ``check`` (lockout after the meeting's
    ``pin_attempts``, which ends the IVR); a wrong meeting id or an empty/timed-out entry uses
    one of ``attempts``.
    """
    tries = 0
    decision = first
    while not meeting:
        await io.play("enter_meeting")
        entered = await io.entry(timeout)
        if entered:
            decision = check(entered, None)
            if isinstance(decision, Admit):
                meeting = entered
                break
            if decision.policy is not None and decision.rule == decision.policy.rule("pin_attempts"):
                return IvrHangup(decision.warning, decision.rule)  # this caller is locked out
            log.info("ivr.meeting_refused", rule=decision.rule)
            await io.play("unknown_meeting")
        tries += 1
        if tries >= attempts:
            rule = decision.rule if isinstance(decision, Refuse) else "ivr.attempts"
            return IvrHangup("no meeting entered" if decision is None else "meeting not available",
                             rule)
    if decision is None:
        decision = check(meeting, None)
    tries = 0
    while isinstance(decision, Admit) and decision.pin_required:
        await io.play("enter_pin")
        entered = await io.entry(timeout)
        if entered is None:
            tries += 1
            if tries >= attempts:
                return IvrHangup("no PIN entered", "ivr.attempts")
            continue
        decision = check(meeting, entered)
        log.info("ivr.pin_entered", meeting=meeting, accepted=isinstance(decision, Admit))
        if isinstance(decision, Refuse) and _pin_refusal(decision):
            await io.play("wrong_pin")
            decision = check(meeting, None)  # locked out now? else ask again
    if isinstance(decision, Refuse):
        return IvrHangup(decision.warning, decision.rule)
    return decision


@cache
def prompt_pcm(name: str, rate: int) -> np.ndarray:
    """A prompt's 16-bit samples at ``rate`` (8 kHz assets; linear interpolation for 16 kHz)."""
    with wave.open(str(PROMPTS_DIR / f"{name}.wav"), "rb") as w:
        if w.getframerate() != PROMPT_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"prompt {name}: expected 8 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if rate == PROMPT_RATE:
        return pcm
    n = len(pcm) * rate // PROMPT_RATE
    x = np.linspace(0, len(pcm) - 1, n)
    return np.interp(x, np.arange(len(pcm)), pcm).astype(np.int16)


class LegIO:
    """:class:`IvrIO` on a running legacy leg: prompts paced into its (bounded) outbound FIFO,
    digits collected into ``#``-terminated entries (``*`` clears the entry so far)."""

    #: Audio queued ahead of the leg's clock while playing (its FIFO holds 200 ms).
    AHEAD = 0.1

    def __init__(self, push: Callable[[np.ndarray], None], rate: int) -> None:
        self._push = push
        self._rate = rate
        self._current: list[str] = []
        self._entries: asyncio.Queue[str] = asyncio.Queue()

    def digit(self, digit: str) -> None:
        """One DTMF digit from the caller (RFC 4733 event or SIP INFO)."""
        if digit == "#" or len(self._current) >= MAX_ENTRY:
            self._entries.put_nowait("".join(self._current))
            self._current.clear()
            if digit == "#":
                return
        if digit == "*":
            self._current.clear()
        elif digit.isdigit():
            self._current.append(digit)

    def _typing(self) -> bool:
        return bool(self._current) or not self._entries.empty()

    async def play(self, prompt: str) -> None:
        """Play ``prompt``; stops early (barge-in) once the caller starts typing."""
        if self._typing():
            return
        pcm = prompt_pcm(prompt, self._rate)
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while sent < len(pcm) and not self._typing():
            due = int((loop.time() - start + self.AHEAD) * self._rate)
            if due > sent:
                self._push(pcm[sent:due])
                sent = due
            await asyncio.sleep(0.02)
        await asyncio.sleep(max(0.0, (len(pcm) / self._rate) - (loop.time() - start)) if sent >= len(pcm) else 0)

    async def entry(self, timeout: float) -> str | None:
        """The next ``#``-terminated entry (may be ""), or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self._entries.get(), timeout)
        except TimeoutError:
            return None
