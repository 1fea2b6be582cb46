"""The embedded conference core: meetings by id, WHIP publish / WHEP subscribe / leave.

This is the plain-Python API; ``gateway.core.http`` puts it on the wire. A
meeting is created by its first join and dropped, with all its media state, when
its last participant leaves. Every peer connection uses
``bridge.ice.rtc_configuration()`` (no STUN) and gathers host candidates on the
process-wide addresses set once by ``bridge.ice.use_host_addresses``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription

from bridge.audio_jitter import use_low_delay_jitter_buffer
from bridge.ice import rtc_configuration
from gateway.core.errors import (
    BadLegDescription,
    BadMeetingId,
    BadParticipantId,
    BadSdp,
    CoreClosed,
    MeetingFull,
    UnknownParticipant,
)
from gateway.core.meeting import Meeting, Participant, ParticipantInfo, ParticipantKind

log = structlog.get_logger("gateway.core")

MEETING_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""Meeting ids appear in URLs, logs and SIP request-URIs: keep them to a charset safe in all three."""

PARTICIPANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What a WHIP publisher can say it is (``?leg=``) and how its media reached the gateway (``?enc=``).
LEGS = ("webrtc", "sip", "h323")
ENCRYPTIONS = ("dtls-srtp", "sdes-srtp", "plain")

MAX_SDP_BYTES = 64 * 1024

CONNECT_TIMEOUT = 30.0
"""A participant whose peer connection is not connected this long after answering is removed."""


@dataclass(frozen=True)
class Answer:
    """The result of a successful publish/subscribe: the new participant's id and the SDP answer."""

    participant_id: str
    sdp: str


def check_meeting_id(meeting_id: str) -> str:
    """Return ``meeting_id`` if it is in the safe charset, else raise :class:`BadMeetingId`."""
    if not MEETING_ID.fullmatch(meeting_id) or meeting_id in (".", ".."):
        raise BadMeetingId("meeting id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return meeting_id


def _check_offer(offer: str) -> None:
    """Cheap sanity checks before aiortc sees the text, so garbage gets a clear 400 reason."""
    if len(offer.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadSdp(f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    lines = offer.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "v=0":
        raise BadSdp("SDP offer must start with v=0")
    if not any(line.startswith(("m=audio ", "m=video ")) for line in lines):
        raise BadSdp("SDP offer has no audio or video m-line")


class ConferenceCore:
    """All meetings of this process. Construct once, share with the HTTP resource, ``await close()`` at exit.

    ``max_participants`` caps one meeting (publishers plus subscribers), since
    every participant costs decode or encode CPU; ``speaker_hold`` is how long
    the video switch keeps a speaker before another may take over.
    """

    def __init__(self, *, max_participants: int = 32, speaker_hold: float = 1.0,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._meetings: dict[str, Meeting] = {}
        self.max_participants = max_participants
        self.speaker_hold = speaker_hold
        self.connect_timeout = connect_timeout
        self._closed = False

    # -- queries ----------------------------------------------------------------------------------

    def meeting(self, meeting_id: str) -> Meeting | None:
        """The live meeting with this id, or None (never creates one)."""
        return self._meetings.get(meeting_id)

    def meeting_ids(self) -> list[str]:
        return sorted(self._meetings)

    def roster(self, meeting_id: str) -> list[ParticipantInfo]:
        """Participants of a meeting in join order; empty when the meeting does not exist."""
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            return []
        return [p.info() for p in meeting.participants.values()]

    # -- joining and leaving ------------------------------------------------------------------------

    async def publish(self, meeting_id: str, offer: str, *, display_name: str | None = None,
                      leg: str = "webrtc", encryption: str = "dtls-srtp") -> Answer:
        """WHIP: answer a publisher's offer; its audio joins the meeting's mix, its video the switch.

        ``leg``/``encryption`` say what the publisher is behind a gateway (``sip``, ``plain``), so
        the meeting page can show each participant's encryption (``LEGS``/``ENCRYPTIONS``)."""
        if leg not in LEGS or encryption not in ENCRYPTIONS:
            raise BadLegDescription(f"leg must be one of {', '.join(LEGS)} and enc one of "
                                    f"{', '.join(ENCRYPTIONS)}")
        # Set at creation, never after: a plain caller must not show as encrypted for a moment.
        return await self._join(meeting_id, "whip", offer, display_name=display_name, exclude=None,
                                leg=leg, encryption=encryption)

    async def subscribe(self, meeting_id: str, offer: str, *, exclude: str | None = None,
                        display_name: str | None = None) -> Answer:
        """WHEP: answer a subscriber's offer with the mix minus ``exclude`` and the switched video."""
        if exclude is not None and not PARTICIPANT_ID.fullmatch(exclude):
            raise BadParticipantId("exclude must be 1-64 characters of A-Z a-z 0-9 _ -")
        return await self._join(meeting_id, "whep", offer, display_name=display_name, exclude=exclude)

    async def leave(self, meeting_id: str, participant_id: str, kind: ParticipantKind | None = None) -> None:
        """Remove a participant (``kind`` must match when given); raises :class:`UnknownParticipant`."""
        meeting = self._meetings.get(meeting_id)
        participant = meeting.participants.get(participant_id) if meeting is not None else None
        if meeting is None or participant is None or (kind is not None and participant.kind != kind):
            raise UnknownParticipant(f"no such {kind or 'participant'} in this meeting")
        await self._remove(meeting, participant_id, reason="left")

    async def close(self) -> None:
        """Remove every participant of every meeting; new joins are refused from now on."""
        self._closed = True
        for meeting in list(self._meetings.values()):
            for pid in list(meeting.participants):
                await self._remove(meeting, pid, reason="shutdown")

    # -- internals --------------------------------------------------------------------------------

    async def _join(self, meeting_id: str, kind: ParticipantKind, offer: str, *,
                    display_name: str | None, exclude: str | None, leg: str = "webrtc",
                    encryption: str = "dtls-srtp") -> Answer:
        check_meeting_id(meeting_id)
        _check_offer(offer)
        if self._closed:
            raise CoreClosed("the conference core is shutting down")
        meeting = self._meetings.get(meeting_id)
        if meeting is not None and len(meeting.participants) >= self.max_participants:
            raise MeetingFull(f"meeting is full ({self.max_participants} participants)")
        if meeting is None:
            meeting = Meeting(meeting_id, speaker_hold=self.speaker_hold)
            self._meetings[meeting_id] = meeting
            log.info("core.meeting.created", meeting=meeting_id)

        pc = RTCPeerConnection(configuration=rtc_configuration())
        participant = Participant(
            id=secrets.token_urlsafe(12), kind=kind, pc=pc,
            display_name=display_name[:64] if display_name else None, exclude=exclude,
            leg=leg, encryption=encryption,
        )
        meeting.add(participant)
        pc.on("track", lambda track: meeting.attach_incoming(participant, track))
        pc.on("connectionstatechange", lambda: self._on_state(meeting, participant))
        try:
            answer_sdp = await self._negotiate(meeting, participant, offer)
        except BaseException:
            await self._remove(meeting, participant.id, reason="negotiation_failed", joined=False)
            raise
        if meeting.participants.get(participant.id) is not participant:
            # Removed while we negotiated (core closing, connection failed): the answer is moot.
            raise CoreClosed("participant was removed during negotiation")
        if kind == "whip":
            _register_keyframe_requests(meeting, participant)
        asyncio.get_running_loop().call_later(
            self.connect_timeout, self._check_connected, meeting, participant)
        log.info("core.participant.joined", meeting=meeting_id, participant=participant.id, kind=kind,
                 excludes=exclude is not None)
        return Answer(participant.id, answer_sdp)

    async def _negotiate(self, meeting: Meeting, participant: Participant, offer: str) -> str:
        pc = participant.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError... on bad SDP
            raise BadSdp(f"cannot use the SDP offer: {str(exc) or type(exc).__name__}") from exc
        if participant.kind == "whip":
            # aiortc's audio buffer waits for 4 later packets (80 ms) and keeps ~300 ms after a
            # loss for good; browsers reach us over real networks, so tolerate one reordered
            # packet (max_hold=2) rather than the gateway's own loopback-tight setting.
            for t in pc.getTransceivers():
                if t.kind == "audio":
                    use_low_delay_jitter_buffer(t.receiver, max_hold=2)
                    # Its encoded frames can then be forwarded to a 1:1 subscriber undecoded.
                    meeting.tap_audio(participant, t.receiver)
        if participant.kind == "whep":
            kinds = {t.kind for t in pc.getTransceivers()}
            if participant.audio is not None and "audio" in kinds:
                audio_sender = pc.addTrack(participant.audio)
            if participant.video is not None and "video" in kinds:
                sender = pc.addTrack(participant.video)
                participant.video.force_keyframe = sender._send_keyframe
        try:
            answer = await pc.createAnswer()
        except Exception as exc:  # no common codec, no DTLS fingerprint...
            raise BadSdp(f"cannot answer the SDP offer: {str(exc) or type(exc).__name__}") from exc
        await pc.setLocalDescription(answer)  # gathers ICE candidates: the answer is complete
        if participant.kind == "whep" and participant.audio is not None and "audio" in kinds:
            _set_send_codec(meeting, participant, pc, audio_sender)
        return pc.localDescription.sdp

    def _on_state(self, meeting: Meeting, participant: Participant) -> None:
        state = participant.pc.connectionState
        if state in ("failed", "closed") and meeting.participants.get(participant.id) is participant:
            asyncio.ensure_future(self._remove(meeting, participant.id, reason=f"connection_{state}"))

    def _check_connected(self, meeting: Meeting, participant: Participant) -> None:
        if (meeting.participants.get(participant.id) is participant
                and participant.pc.connectionState != "connected"):
            asyncio.ensure_future(self._remove(meeting, participant.id, reason="connect_timeout"))

    async def _remove(self, meeting: Meeting, participant_id: str, *, reason: str, joined: bool = True) -> None:
        participant = meeting.remove(participant_id)
        if participant is None:
            return
        ended = meeting.empty and self._meetings.get(meeting.id) is meeting
        if ended:
            del self._meetings[meeting.id]
        if joined:
            log.info("core.participant.left", meeting=meeting.id, participant=participant_id,
                     kind=participant.kind, reason=reason)
        if ended:
            log.info("core.meeting.ended", meeting=meeting.id)
        try:
            await participant.pc.close()
        except Exception:
            log.exception("core.participant.close_failed", meeting=meeting.id, participant=participant_id)


def _set_send_codec(meeting: Meeting, participant: Participant, pc: RTCPeerConnection, sender: Any) -> None:
    """Tell the meeting which codec a subscriber's audio goes out in: aiortc's sender sends in
    the first of its transceiver's negotiated codecs (``RTCRtpSender.send`` uses
    ``parameters.codecs[0]``; ``RTCRtpTransceiver._codecs`` holds them, no public accessor)."""
    for transceiver in pc.getTransceivers():
        if transceiver.sender is sender and transceiver._codecs:
            meeting.set_send_codec(participant, transceiver._codecs[0])
            return


def _register_keyframe_requests(meeting: Meeting, participant: Participant) -> None:
    """Let the video switch ask this publisher for a keyframe: an RTCP PLI (RFC 4585 6.3.1) on
    its video receiver, naming the SSRC it sends from (known once its first packet arrived).
    aiortc has no public call for this; ``RTCRtpReceiver._send_rtcp_pli`` is what it uses itself
    when its decoder fails."""
    for transceiver in participant.pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        receiver = transceiver.receiver

        def request(receiver: Any = receiver) -> None:
            sources = receiver.getSynchronizationSources()
            if sources:
                asyncio.ensure_future(receiver._send_rtcp_pli(sources[0].source))

        meeting.video.set_keyframe_requester(participant.id, request)
        return
