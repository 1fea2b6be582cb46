"""What the control API can see and do, independent of HTTP (so it is testable without sockets).

Reads come from the roster (legacy participants, pseudonymous) and the embedded
conference core's roster (browsers and other WHIP/WHEP clients, by their core id
only). Commands go through the call controller, which hangs legacy calls up with a
BYE carrying a ``Reason:`` header, and the embedded core, which removes the rest.
With an external core (``core.url``) only legacy participants can be seen and removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bridge.dtmf_sender import (
    DEFAULT_DURATION_MS,
    DtmfError,
    check_duration,
    validate_digits,
)
from gateway import __version__
from gateway.roster import PROTOCOLS, Roster

log = structlog.get_logger("gateway.api")

END_MEETING_REASON = "meeting ended by an operator"
#: Why a mute cannot be done (409): the participant exists but its audio is not ours to cut.
MUTE_UNREACHABLE = ("this participant's audio is mixed by an external conference core; "
                    "mute it there")
MUTE_IN_LOBBY = "this caller waits in the lobby and is not heard in the meeting yet; admit it first"
REMOVE_PARTICIPANT_REASON = "removed from the meeting by an operator"
#: Why DTMF cannot be sent (409): only answered legacy calls have a keypad on the other end.
DTMF_UNREACHABLE = "DTMF goes to answered SIP/H.323 participants only"


class Controller(Protocol):
    """The part of ``gateway.calls.CallController`` the API uses."""

    roster: Roster

    def end_participant(self, meeting: str, participant_id: str, reason: str) -> bool: ...

    async def end_meeting(self, meeting: str, reason: str) -> int: ...


class Core(Protocol):
    """The part of ``gateway.core.conference.ConferenceCore`` the API uses."""

    def meeting_ids(self) -> list[str]: ...

    def roster(self, meeting_id: str) -> list[Any]: ...

    async def leave(self, meeting_id: str, participant_id: str, kind: Any = None) -> None: ...


@dataclass(frozen=True)
class CommandResult:
    """What a command did; ``found`` False means the target did not exist (404);
    ``conflict`` says why an existing target cannot take the command (409)."""

    found: bool
    body: dict[str, Any]
    conflict: str | None = None


class ControlService:
    """The operations behind ``/api/v1``. ``ready`` reports each readiness check by name."""

    def __init__(self, controller: Controller, core: Core | None,
                 ready: Callable[[], dict[str, bool]], *,
                 reload_policy: Callable[[str], Any] | None = None) -> None:
        self._controller = controller
        self._core = core
        self._ready = ready
        self._reload_policy = reload_policy

    @property
    def roster(self) -> Roster:
        return self._controller.roster

    # -- reads ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = self._ready()
        ok = all(checks.values())
        return ok, {"status": "ready" if ok else "not-ready", "checks": checks}

    def _web_ids(self, meeting: str) -> list[str]:
        """Core publisher ids of this meeting that are not the WebRTC side of a legacy call."""
        if self._core is None:
            return []
        legacy = {cid for p in self.roster.participants(meeting) for cid in p.core_ids}
        return [p.id for p in self._core.roster(meeting) if p.kind == "whip" and p.id not in legacy]

    def _meeting_ids(self) -> list[str]:
        ids = list(self.roster.meeting_ids())
        if self._core is not None:
            ids += [m for m in self._core.meeting_ids() if m not in ids]
        return sorted(ids)

    def meetings(self) -> dict[str, Any]:
        out = []
        for meeting in self._meeting_ids():
            legacy = self.roster.participants(meeting)
            by_protocol: dict[str, int] = {proto: sum(1 for p in legacy if p.protocol == proto)
                                           for proto in PROTOCOLS}
            by_protocol["webrtc"] = len(self._web_ids(meeting))
            out.append({"id": meeting, "participants": sum(by_protocol.values()),
                        "by_protocol": by_protocol})
        return {"meetings": out}

    def _lobby(self, meeting: str) -> list[dict[str, str]]:
        """Legacy callers waiting in the meeting's lobby (``lobby: true``), by id only."""
        waiting = getattr(self._controller, "lobby", None)
        return list(waiting(meeting)) if waiting is not None else []

    def _live(self) -> Any:
        """The controllers' :class:`gateway.live_meeting.LiveOverrides` (None: not wired)."""
        return getattr(self._controller, "live", None)

    def _core_meeting(self, meeting: str) -> Any:
        """The embedded core's :class:`gateway.core.meeting.Meeting`, when reachable."""
        find = getattr(self._core, "meeting", None)
        return find(meeting) if find is not None else None

    def meeting(self, meeting: str) -> dict[str, Any] | None:
        lobby = self._lobby(meeting)
        if meeting not in self._meeting_ids() and not lobby:
            return None
        live, core_meeting = self._live(), self._core_meeting(meeting)
        muted = core_meeting.muted if core_meeting is not None else set()
        return ({"lobby": lobby} if lobby else {}) | {
            "id": meeting,
            "locked": bool(live is not None and live.locked(meeting)),
            "participants": [p.snapshot() for p in self.roster.participants(meeting)],
            "webrtc_participants": [{"id": pid, "protocol": "webrtc",
                                     "encryption": {"webrtc": "dtls-srtp"}, "muted": pid in muted}
                                    for pid in self._web_ids(meeting)],
        }

    # -- commands ---------------------------------------------------------------------------------

    async def end_meeting(self, meeting: str) -> CommandResult:
        """Hang up every legacy call (BYE + Reason), then remove whatever the core still holds."""
        if meeting not in self._meeting_ids():
            return CommandResult(False, {})
        ended = await self._controller.end_meeting(meeting, END_MEETING_REASON)
        removed = 0
        if self._core is not None:
            for p in self._core.roster(meeting):
                removed += await self._leave_core(meeting, p.id)
        return CommandResult(True, {"id": meeting, "ended_calls": ended, "removed_webrtc": removed})

    async def remove_participant(self, meeting: str, participant_id: str) -> CommandResult:
        """A legacy participant (roster id) is hung up; a browser (core id) leaves the core."""
        if self._controller.end_participant(meeting, participant_id, REMOVE_PARTICIPANT_REASON):
            return CommandResult(True, {"id": participant_id, "meeting": meeting, "protocol": "legacy"})
        if participant_id in self._web_ids(meeting) and self._core is not None:
            await self._leave_core(meeting, participant_id)
            # Its WHEP subscription (the page's playback) excludes it by id: remove that too.
            for p in self._core.roster(meeting):
                if p.kind == "whep" and p.exclude == participant_id:
                    await self._leave_core(meeting, p.id)
            return CommandResult(True, {"id": participant_id, "meeting": meeting, "protocol": "webrtc"})
        return CommandResult(False, {})

    async def admit_participant(self, meeting: str, participant_id: str) -> CommandResult:
        """Let a legacy caller waiting in the lobby join; ``found`` False if none waits by that id."""
        admit = getattr(self._controller, "admit_participant", None)
        if admit is None or not admit(meeting, participant_id):
            return CommandResult(False, {})
        return CommandResult(True, {"id": participant_id, "meeting": meeting, "admitted": True})

    def _running(self, meeting: str) -> bool:
        return meeting in self._meeting_ids() or bool(self._lobby(meeting))

    def lock_meeting(self, meeting: str, locked: bool) -> CommandResult:
        """Refuse (or again admit) new legacy callers to a running meeting; those in stay."""
        live = self._live()
        if live is None or not self._running(meeting):
            return CommandResult(False, {})
        live.set_locked(meeting, locked)
        log.info("meeting.locked" if locked else "meeting.unlocked", meeting=meeting)
        return CommandResult(True, {"id": meeting, "locked": locked})

    def change_pin(self, meeting: str, pin: str) -> CommandResult:
        """A new PIN for new callers (and those still entering one) until the meeting ends;
        raises :class:`gateway.live_meeting.InvalidPin`. The PIN is neither logged nor echoed."""
        live = self._live()
        if live is None or not self._running(meeting):
            return CommandResult(False, {})
        live.set_pin(meeting, pin)
        log.info("meeting.pin_changed", meeting=meeting)
        return CommandResult(True, {"id": meeting, "pin_changed": True})

    def mute_participant(self, meeting: str, participant_id: str, muted: bool) -> CommandResult:
        """A legacy caller's audio stops reaching the core (the gateway cuts it); a browser's
        contribution is muted in the embedded core's mix; 409 when neither can be done."""
        body = {"id": participant_id, "meeting": meeting, "muted": muted}
        set_legacy = getattr(self._controller, "set_participant_muted", None)
        if set_legacy is not None and set_legacy(meeting, participant_id, muted):
            return CommandResult(True, body | {"protocol": "legacy"})
        if any(w.get("id") == participant_id for w in self._lobby(meeting)):
            return CommandResult(True, {}, conflict=MUTE_IN_LOBBY)
        if participant_id in self._web_ids(meeting):
            core_meeting = self._core_meeting(meeting)
            if core_meeting is None or not core_meeting.set_muted(participant_id, muted):
                return CommandResult(True, {}, conflict=MUTE_UNREACHABLE)
            return CommandResult(True, body | {"protocol": "webrtc"})
        return CommandResult(False, {})

    def send_dtmf(self, meeting: str, participant_id: str, digits: str,
                  duration_ms: int = DEFAULT_DURATION_MS) -> CommandResult:
        """Key ``digits`` toward a legacy participant (e.g. the PIN of a conference bridge the
        meeting is cascaded into through a SIP room connector). Raises :class:`DtmfError` for
        digits or a duration that can never be sent (400); 409 when the participant cannot
        take DTMF (a browser; a caller without telephone-event). The digits are not logged."""
        text = validate_digits(digits)
        check_duration(duration_ms)
        send = getattr(self._controller, "send_dtmf", None)
        try:
            if send is not None and send(meeting, participant_id, text, duration_ms):
                return CommandResult(True, {"id": participant_id, "meeting": meeting, "queued": len(text)})
        except DtmfError as exc:
            return CommandResult(True, {}, conflict=str(exc))
        if participant_id in self._web_ids(meeting) or any(
                w.get("id") == participant_id for w in self._lobby(meeting)):
            return CommandResult(True, {}, conflict=DTMF_UNREACHABLE)
        return CommandResult(False, {})

    def reload_policy(self) -> CommandResult:
        """Reload the policy file (``Gateway.reload_policy``); ``found`` False when reload is not
        wired (a gateway without a policy file); the body says whether it was swapped in."""
        if self._reload_policy is None:
            return CommandResult(False, {})
        result = self._reload_policy("api")
        if result is None:
            return CommandResult(False, {})
        return CommandResult(True, result.body())

    async def _leave_core(self, meeting: str, participant_id: str) -> int:
        from gateway.core.errors import UnknownParticipant

        assert self._core is not None
        try:
            await self._core.leave(meeting, participant_id)
        except UnknownParticipant:  # left on its own meanwhile
            return 0
        return 1
