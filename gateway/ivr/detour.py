"""The detour an answered legacy call takes before it joins: the IVR, then the lobby.

Shared by the SIP controller (:mod:`gateway.calls`) and the H.323 one (:mod:`gateway.h323_calls`):
each answers the call its own way and hands over a running legacy leg wrapped in a :class:`LegIO`;
from there the conversation (:func:`converse`: ask for what is missing, then check that the chosen
meeting takes this call's media) and the lobby (:func:`wait_in_lobby`, released by the control
API's admit through :func:`admit_waiting`) are the same for every protocol.  Joining (or hanging
up with the reason) is the controller's again.

The call record only needs the few fields of :class:`Detouring`; the running step is kept in its
``ivr_task`` so that ending the call (``_close_media``) cancels whatever the caller is waiting in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

import structlog

from gateway.admission import Admit
from gateway.ivr import Check, IvrHangup, IvrIO, LegIO, run_ivr
from gateway.roster import new_participant_id

log = structlog.get_logger("gateway.ivr")


class Detouring(Protocol):
    """What the detour reads and sets on a call record (``LegacyCall``, ``H323LegacyCall``)."""

    label: str
    meeting: str
    ended: bool
    ivr_task: asyncio.Task[Any] | None
    #: The id the control API admits it by while it waits in the lobby.
    lobby_id: str | None
    admitted: asyncio.Event | None


def media_refusal(admit: Admit, codec: str, secure: bool) -> IvrHangup | None:
    """Whether the meeting the caller chose in the IVR takes the media its call already has
    (the leg was set up before the meeting was known): codec and ``require-srtp``."""
    mp = admit.policy
    if codec not in mp.audio_codecs:
        rule = mp.rule("audio_codecs")
        return IvrHangup(f"meeting '{admit.meeting}' does not allow {codec} (rule {rule})", rule)
    if mp.legacy_media == "require-srtp" and not secure:
        rule = mp.rule("legacy_media")
        return IvrHangup(f"meeting '{admit.meeting}' requires encrypted media (SRTP) (rule {rule})", rule)
    return None


async def converse(entry: Detouring, io: IvrIO, check: Check, *, first: Admit | None, codec: str,
                   secure: bool) -> Admit | IvrHangup | None:
    """Run the IVR on ``entry`` (``first``: the decision for the dialled meeting, None to ask for
    the meeting too).  The admitting decision, why to hang up, or None when the call ended meanwhile."""
    entry.ivr_task = asyncio.ensure_future(run_ivr(
        io, check, meeting=entry.meeting if first is not None else "", first=first))
    try:
        result = await entry.ivr_task
    except asyncio.CancelledError:
        return None  # the caller hung up (or was ended): the controller closed the leg
    finally:
        entry.ivr_task = None
    if entry.ended:
        return None
    if isinstance(result, Admit):
        return media_refusal(result, codec, secure) or result
    return result


async def wait_in_lobby(entry: Detouring, io: LegIO, *, protocol: str) -> bool:
    """Hold the answered caller (prompt, then silence) until :func:`admit_waiting` lets it in;
    False if the call ended meanwhile."""
    entry.lobby_id = new_participant_id()
    entry.admitted = asyncio.Event()
    log.info("call.lobby", call=entry.label, meeting=entry.meeting, lobby_id=entry.lobby_id, protocol=protocol)
    entry.ivr_task = asyncio.ensure_future(_hold(io, entry.admitted))
    try:
        await entry.ivr_task
    except asyncio.CancelledError:
        return False
    finally:
        entry.ivr_task, entry.lobby_id = None, None
    return not entry.ended


async def _hold(io: LegIO, admitted: asyncio.Event) -> None:
    await io.play("lobby")
    await admitted.wait()


def waiting(entries: Iterable[Detouring], meeting: str, protocol: str) -> list[dict[str, str]]:
    """The callers waiting in ``meeting``'s lobby, for the control API (ids only)."""
    return [{"id": e.lobby_id, "protocol": protocol} for e in entries
            if e.meeting == meeting and e.lobby_id is not None and not e.ended]


def admit_waiting(entries: Iterable[Detouring], meeting: str, lobby_id: str) -> bool:
    """Let the caller waiting in ``meeting``'s lobby as ``lobby_id`` join; False if none waits so."""
    for entry in entries:
        if entry.meeting == meeting and entry.lobby_id == lobby_id and entry.admitted is not None \
                and not entry.ended:
            entry.admitted.set()
            log.info("call.lobby_admitted", call=entry.label, meeting=meeting)
            return True
    return False
