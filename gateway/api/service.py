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

from gateway import __version__
from gateway.roster import PROTOCOLS, Roster

log = structlog.get_logger("gateway.api")

END_MEETING_REASON = "meeting ended by an operator"
REMOVE_PARTICIPANT_REASON = "removed from the meeting by an operator"


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
    """What a command did; ``found`` False means the target did not exist (404)."""

    found: bool
    body: dict[str, Any]


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

    def meeting(self, meeting: str) -> dict[str, Any] | None:
        lobby = self._lobby(meeting)
        if meeting not in self._meeting_ids() and not lobby:
            return None
        return ({"lobby": lobby} if lobby else {}) | {
            "id": meeting,
            "participants": [p.snapshot() for p in self.roster.participants(meeting)],
            "webrtc_participants": [{"id": pid, "protocol": "webrtc",
                                     "encryption": {"webrtc": "dtls-srtp"}}
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
