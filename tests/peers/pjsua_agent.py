#!/usr/bin/env python3
"""A real SIP user agent (PJSIP through pjsua2) driven from the command line, for interop tests.

Run it as a subprocess with the venv's python; it prints exactly one JSON line with the outcome on
stdout when it ends, and ends with ``os._exit`` (pjsua2 can crash in its teardown).

Modes
-----
``call URI``
    Dial ``URI`` over ``--transport udp|tcp|tls`` offering one codec (``--codec PCMU|PCMA|G722``),
    play ``--play`` (a WAV, looped) into the call, record what arrives into ``--record``, stay
    connected ``--seconds``, hang up.
``answer``
    Listen on ``--port`` (0 = any free port) on 127.0.0.1, answer each incoming call with
    ``--answer-status`` (200 by default; a failure status rejects, with ``--answer-warning`` as a
    Warning header), play/record like ``call``, hang up after ``--seconds`` connected or when the
    caller hangs up. Once listening it writes ``PJSUA_AGENT_READY {"udp": port, "tcp": port}`` as
    one line on stderr.

Result line (stdout)::

    {"connected": bool, "final_status": int, "reason": str, "warning": str|null,
     "status_from_wire": bool,
     "duration_connected": float, "rx_rtp_packets": int|null, "tx_rtp_packets": int|null,
     "codec": "PCMU/8000"|..., "remote_rtp": "127.0.0.1:port"|null, "record": path|null,
     "mode": "call"|"answer", "error": str|null}

``final_status`` is the INVITE's final response status as received (``status_from_wire`` true);
when none arrived it is the code pjsua made up locally (408, 487 after our CANCEL, 503 for a refused
TCP connection) with ``status_from_wire`` false. In answer mode it is the status we answered with. pjsua2 handles at most 4 calls per process; run more processes for more calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import traceback

import pjsua2 as pj

CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000"}
SRTP_USE = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}
HOST = "127.0.0.1"
READY_MARK = "PJSUA_AGENT_READY"


def _warning_from_message(whole_msg: str, header: str = "warning") -> str | None:
    """The value of the Warning (or ``header``) header of a raw SIP message (None when there is none)."""
    head = whole_msg.split("\r\n\r\n", 1)[0]
    # Unfold continuation lines (RFC 3261 7.3.1) before matching.
    head = re.sub(r"\r\n[ \t]+", " ", head)
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == header:
            return value.strip()
    return None


def _rx_message_of(event: pj.SipEvent) -> str | None:
    """The received SIP message carried by a call/transaction event, if the event has one."""
    try:
        if event.type == pj.PJSIP_EVENT_TSX_STATE:
            tsx_state = event.body.tsxState
            if tsx_state.type == pj.PJSIP_EVENT_RX_MSG:
                return tsx_state.src.rdata.wholeMsg or None
        elif event.type == pj.PJSIP_EVENT_RX_MSG:
            return event.body.rxMsg.rdata.wholeMsg or None
    except Exception:  # noqa: BLE001 - a missing field must not end the agent
        return None
    return None


class Outcome:
    """What one call did; becomes the result line."""

    def __init__(self, record: str | None) -> None:
        self.connected = False
        self.final_status = 0
        self.reason = ""
        self.warning: str | None = None
        #: The ``Reason:`` header of a BYE the far end sent (RFC 3326), to check why it hung up.
        self.bye_reason: str | None = None
        self.connected_at: float | None = None
        self.disconnected_at: float | None = None
        self.rx_rtp_packets: int | None = None
        self.tx_rtp_packets: int | None = None
        self.codec: str | None = None
        self.remote_rtp: str | None = None
        self.record = record
        self.status_from_wire = False
        self.disconnected = False
        self.error: str | None = None
        #: DTMF digits pjsua reported through ``onDtmfDigit`` (RFC 4733 or SIP INFO), in order.
        self.dtmf_received = ""
        self.dtmf_methods: list[str] = []

    def as_json(self, mode: str) -> str:
        duration = 0.0
        if self.connected_at is not None:
            end = self.disconnected_at if self.disconnected_at is not None else time.monotonic()
            duration = round(end - self.connected_at, 3)
        return json.dumps({
            "mode": mode,
            "connected": self.connected,
            "final_status": self.final_status,
            "reason": self.reason,
            "warning": self.warning,
            "bye_reason": self.bye_reason,
            "status_from_wire": self.status_from_wire,
            "duration_connected": duration,
            "rx_rtp_packets": self.rx_rtp_packets,
            "tx_rtp_packets": self.tx_rtp_packets,
            "codec": self.codec,
            "remote_rtp": self.remote_rtp,
            "record": self.record,
            "error": self.error,
            "dtmf_received": self.dtmf_received,
            "dtmf_methods": sorted(set(self.dtmf_methods)),
        })


class AgentCall(pj.Call):
    """A call that plays a looped WAV into itself and records what it receives."""

    def __init__(self, agent: Agent, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID,
                 *, record: str | None = None) -> None:
        super().__init__(account, call_id)
        self.agent = agent
        self.outcome = Outcome(record)
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.audio: pj.AudioMedia | None = None

    # -- callbacks (run inside libHandleEvents on the main thread) --
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        msg = _rx_message_of(prm.e)
        if msg and msg.startswith("SIP/2.0 ") and " INVITE" in _cseq(msg):
            self._note_invite_response(msg)
        self._note_bye(msg)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.outcome.connected:
            self.outcome.connected = True
            self.outcome.connected_at = time.monotonic()
            if self.outcome.final_status == 0 or self.outcome.final_status >= 300:
                self.outcome.final_status = 200
                self.outcome.reason = self.outcome.reason or "OK"
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.outcome.disconnected = True
            self.outcome.disconnected_at = time.monotonic()
            if not self.outcome.connected and self.outcome.final_status < 300:
                # No final response seen on the wire (timeout, transport error, local cancel).
                self.outcome.final_status = info.lastStatusCode
                self.outcome.reason = info.lastReason

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        msg = _rx_message_of(prm.e)
        if msg and msg.startswith("SIP/2.0 ") and " INVITE" in _cseq(msg):
            self._note_invite_response(msg)
        self._note_bye(msg)

    def _note_bye(self, msg: str | None) -> None:
        if msg and msg.startswith("BYE ") and self.outcome.bye_reason is None:
            self.outcome.bye_reason = _warning_from_message(msg, "reason")

    def _note_invite_response(self, msg: str) -> None:
        status_line = msg.split("\r\n", 1)[0]
        parts = status_line.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            return
        if status < 200:
            return
        if self.outcome.connected:
            return  # a retransmitted 200 or a later transaction; the outcome is settled
        self.outcome.final_status = status
        self.outcome.status_from_wire = True
        self.outcome.reason = parts[2] if len(parts) > 2 else ""
        self.outcome.warning = _warning_from_message(msg)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            if self.audio is not None:
                continue  # already wired (a re-INVITE keeps the same port)
            audio = self.getAudioMedia(index)
            self.audio = audio
            if self.agent.play_wav:
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(self.agent.play_wav, 0)  # 0: loop at EOF
                self.player.startTransmit(audio)
            if self.outcome.record:
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(self.outcome.record)
                audio.startTransmit(self.recorder)
            try:
                stream = self.getStreamInfo(index)
                self.outcome.codec = f"{stream.codecName}/{stream.codecClockRate}"
                self.outcome.remote_rtp = stream.remoteRtpAddress
            except pj.Error:
                pass
            self.agent.stream_index[self.getId()] = index

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self.outcome.dtmf_received += prm.digit
        self.outcome.dtmf_methods.append("rfc4733" if prm.method == pj.PJSUA_DTMF_METHOD_RFC2833 else "info")

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        # The stream still exists here; after it (e.g. when the peer hung up) its counters are gone.
        self.snapshot_stats(prm.streamIdx)

    # -- helpers --
    def snapshot_stats(self, index: int | None = None) -> None:
        """Read the RTP counters while the stream still exists (before hangup)."""
        if index is None:
            index = self.agent.stream_index.get(self.getId())
        if index is None:
            return
        try:
            stat = self.getStreamStat(index)
            self.outcome.rx_rtp_packets = int(stat.rtcp.rxStat.pkt)
            self.outcome.tx_rtp_packets = int(stat.rtcp.txStat.pkt)
        except pj.Error:
            pass

    def release_media(self) -> None:
        """Stop and destroy player and recorder; destroying the recorder writes the WAV header."""
        if not self.outcome.disconnected:  # after disconnection the call's port is gone already
            try:
                if self.audio is not None and self.recorder is not None:
                    self.audio.stopTransmit(self.recorder)
                if self.audio is not None and self.player is not None:
                    self.player.stopTransmit(self.audio)
            except pj.Error:
                pass
        self.recorder = None  # pjsua_recorder_destroy: flushes and finalises the WAV file
        self.player = None


class AgentAccount(pj.Account):
    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.agent.incoming(self, prm)


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.play_wav: str | None = args.play
        self.calls: list[AgentCall] = []
        self.stream_index: dict[int, int] = {}
        self.ep = pj.Endpoint()
        self.transports: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.account: AgentAccount | None = None

    # -- set-up --
    def start(self) -> None:
        args = self.args
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4
        cfg.uaConfig.userAgent = "roomgate-test-pjsua/2.15.1"
        cfg.logConfig.level = args.log_level if args.log_file else 0
        cfg.logConfig.consoleLevel = 0
        if args.log_file:
            cfg.logConfig.filename = args.log_file
        cfg.medConfig.noVad = True  # continuous RTP: packet counts and tones are not gated by VAD
        cfg.medConfig.ecTailLen = 0  # no echo canceller between the player and the stream
        cfg.medConfig.threadCnt = 1
        self.ep.libInit(cfg)

        kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP,
                 "tls": pj.PJSIP_TRANSPORT_TLS}
        for name in args.transport.split(","):
            tcfg = pj.TransportConfig()
            tcfg.port = args.port
            tcfg.boundAddress = HOST
            tcfg.publicAddress = HOST
            if name == "tls":
                # The bundled OpenSSL 1.0.2k stops at TLS 1.2; the gateway's test certificate is
                # self-signed, so the server is not verified (the test checks the channel, not PKI).
                tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
                tcfg.tlsConfig.verifyServer = False
                if args.tls_cert:
                    tcfg.tlsConfig.certFile = args.tls_cert
                    tcfg.tlsConfig.privKeyFile = args.tls_key
            tid = self.ep.transportCreate(kinds[name], tcfg)
            self.transports[name] = tid
            self.ports[name] = int(self.ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()

        allowed = CODEC_IDS[args.codec] if args.codec else None
        for codec in self.ep.codecEnum2():
            name = codec.codecId
            if allowed is None:
                continue
            prio = 255 if name.startswith(allowed) else 0
            self.ep.codecSetPriority(name, prio)

        acfg = pj.AccountConfig()
        first = args.transport.split(",")[0]
        acfg.idUri = f"sip:{args.user}@{HOST}:{self.ports[first]}"
        if args.mode == "call":
            acfg.sipConfig.transportId = self.transports[first]
        acfg.mediaConfig.transportConfig.boundAddress = HOST
        acfg.mediaConfig.transportConfig.publicAddress = HOST
        acfg.mediaConfig.transportConfig.port = args.rtp_port or _random_rtp_port()
        acfg.mediaConfig.transportConfig.portRange = 0 if args.rtp_port else 2000
        acfg.mediaConfig.srtpUse = SRTP_USE[args.srtp]
        acfg.mediaConfig.srtpSecureSignaling = 0
        if args.srtp_suite:
            acfg.mediaConfig.srtpOpt.cryptos.clear()
            for suite in args.srtp_suite.split(","):
                crypto = pj.SrtpCrypto()
                crypto.name = suite
                acfg.mediaConfig.srtpOpt.cryptos.append(crypto)
        if args.session_expires:  # RFC 4028 session timers, pjsua always asks for them
            acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
            acfg.callConfig.timerSessExpiresSec = args.session_expires
            acfg.callConfig.timerMinSESec = args.min_se or min(90, args.session_expires)
        acfg.natConfig.iceEnabled = False
        acfg.natConfig.sdpNatRewriteUse = False
        acfg.natConfig.viaRewriteUse = False
        acfg.natConfig.contactRewriteUse = False
        self.account = AgentAccount(self)
        self.account.create(acfg, True)

    # -- answer side --
    def incoming(self, account: AgentAccount, prm: pj.OnIncomingCallParam) -> None:
        call_no = len(self.calls)
        record = self.args.record
        if record and call_no > 0:
            root, ext = os.path.splitext(record)
            record = f"{root}.{call_no}{ext or '.wav'}"
        call = AgentCall(self, account, prm.callId, record=record)
        self.calls.append(call)
        op = pj.CallOpParam()
        status = self.args.answer_status
        op.statusCode = status
        if status >= 300 and self.args.answer_warning:
            header = pj.SipHeader()
            header.hName = "Warning"
            header.hValue = self.args.answer_warning
            op.txOption.headers.append(header)
        call.outcome.final_status = status if status >= 300 else 0
        call.answer(op)

    # -- loop --
    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.ep.libHandleEvents(int(min(left, 0.02) * 1000) or 1)

    def run_call(self) -> Outcome:
        args = self.args
        uri = args.uri
        if args.transport in ("tcp", "tls") and "transport=" not in uri.lower() \
                and not uri.lower().startswith("sips:"):
            uri += f";transport={args.transport}"
        call = AgentCall(self, self.account, record=args.record)
        self.calls.append(call)
        op = pj.CallOpParam(True)
        if args.no_sdp_offer:  # delayed offer: INVITE without SDP, our answer goes in the ACK
            op.opt.flag |= pj.PJSUA_CALL_NO_SDP_OFFER
        call.makeCall(uri, op)
        deadline = time.monotonic() + args.timeout
        while not call.outcome.connected and not call.outcome.disconnected:
            if time.monotonic() > deadline:
                call.outcome.error = f"no answer within {args.timeout}s"
                break
            self.poll(0.05)
        if call.outcome.connected:
            stay_until = min(call.outcome.connected_at + args.seconds, deadline + args.seconds)
            # --dtmf "1000#,1234#": each comma-separated part is sent (RFC 4733, call.dialDtmf)
            # --dtmf-pause seconds after the previous one (the first after connecting).
            chunks = [c for c in (args.dtmf or "").split(",") if c]
            next_dtmf = call.outcome.connected_at + args.dtmf_pause
            while not call.outcome.disconnected and time.monotonic() < stay_until:
                if chunks and time.monotonic() >= next_dtmf:
                    try:
                        if args.dtmf_method == "info":  # SIP INFO (application/dtmf-relay)
                            prm = pj.CallSendDtmfParam()
                            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
                            prm.digits = chunks.pop(0)
                            call.sendDtmf(prm)
                        else:
                            call.dialDtmf(chunks.pop(0))
                    except pj.Error as exc:
                        call.outcome.error = f"dialDtmf failed: {exc.info()}"
                    next_dtmf = time.monotonic() + args.dtmf_pause
                self.poll(0.05)
        self.finish([call])
        return call.outcome

    def run_answer(self) -> list[Outcome]:
        args = self.args
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            self.poll(0.05)
            if not self.calls:
                continue
            now = time.monotonic()
            for call in self.calls:
                o = call.outcome
                if o.connected and not o.disconnected and now - o.connected_at >= args.seconds:
                    self.hangup(call)
            if all(c.outcome.disconnected for c in self.calls) and len(self.calls) >= args.calls:
                break
        self.finish(self.calls)
        return [c.outcome for c in self.calls]

    def hangup(self, call: AgentCall) -> None:
        call.snapshot_stats()
        try:
            if call.isActive():
                call.hangup(pj.CallOpParam(True))
        except pj.Error:
            pass

    def finish(self, calls: list[AgentCall]) -> None:
        for call in calls:
            if call.outcome.rx_rtp_packets is None and not call.outcome.disconnected:
                call.snapshot_stats()
            if not call.outcome.disconnected:
                self.hangup(call)
        # Let the BYE/CANCEL go out and its response come back.
        end = time.monotonic() + 2.0
        while time.monotonic() < end and not all(c.outcome.disconnected for c in calls):
            self.poll(0.05)
        self.poll(0.1)
        for call in calls:
            call.release_media()
        self.poll(0.05)


def _cseq(msg: str) -> str:
    match = re.search(r"^(?:CSeq|cseq)\s*:\s*(.*)$", msg.split("\r\n\r\n", 1)[0], re.MULTILINE | re.IGNORECASE)
    return " " + match.group(1).strip() if match else ""


def _random_rtp_port() -> int:
    # Away from the gateway's media range (30000-39999) and from each other agent's.
    return random.randrange(40000, 58000, 2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("call", "answer"):
        s = sub.add_parser(mode)
        if mode == "call":
            s.add_argument("uri")
        s.add_argument("--transport", default="udp",
                       help="udp | tcp (answer also takes udp,tcp)")
        s.add_argument("--codec", choices=sorted(CODEC_IDS), default=None,
                       help="offer/accept only this codec")
        s.add_argument("--play", help="WAV to play (looped) into the call")
        s.add_argument("--record", help="WAV to record the received audio into")
        s.add_argument("--seconds", type=float, default=3.0, help="how long to stay connected")
        s.add_argument("--timeout", type=float, default=20.0,
                       help="give up when not connected (call) / no call done (answer) by then")
        s.add_argument("--port", type=int, default=0, help="SIP port on 127.0.0.1 (0: any)")
        s.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: random)")
        s.add_argument("--srtp", choices=sorted(SRTP_USE), default="off")
        s.add_argument("--srtp-suite", default=None,
                       help="offer only these SDES suites (comma-separated, e.g. AES_CM_128_HMAC_SHA1_32)")
        s.add_argument("--tls-cert", default=None, help="client certificate (PEM) for TLS")
        s.add_argument("--tls-key", default=None, help="its private key (PEM)")
        s.add_argument("--user", default="pjsua" if mode == "call" else "answer")
        s.add_argument("--log-file", help="write pjsua's log here")
        s.add_argument("--log-level", type=int, default=4)
        s.add_argument("--session-expires", type=int, default=0,
                       help="RFC 4028 Session-Expires to ask for (0: session timers off)")
        s.add_argument("--min-se", type=int, default=0, help="RFC 4028 Min-SE (0: pjsua's)")
        if mode == "call":
            s.add_argument("--dtmf", default=None,
                           help='DTMF to send after connecting, RFC 4733; commas separate entries '
                                'sent --dtmf-pause apart, e.g. "1000#,1234#"')
            s.add_argument("--dtmf-pause", type=float, default=2.0,
                           help="seconds before the first DTMF entry and between entries")
            s.add_argument("--dtmf-method", choices=("rfc4733", "info"), default="rfc4733",
                           help="send --dtmf as RFC 4733 events (default) or SIP INFO")
            s.add_argument("--no-sdp-offer", action="store_true",
                           help="delayed offer: INVITE without SDP (PJSUA_CALL_NO_SDP_OFFER)")
        if mode == "answer":
            s.add_argument("--answer-status", type=int, default=200)
            s.add_argument("--answer-warning", default=None,
                           help='Warning header value for a failure answer, e.g. 399 host "text"')
            s.add_argument("--calls", type=int, default=1,
                           help="end after this many calls have ended (at most 4)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # PJSIP prints to fd 1 before its log settings apply (libCreate): keep the real stdout for the
    # result line only and send everything else written to fd 1 to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    agent = Agent(args)
    lines: list[str] = []
    code = 0
    try:
        agent.start()
        if args.mode == "call":
            lines.append(agent.run_call().as_json("call"))
        else:
            sys.stderr.write(f"{READY_MARK} {json.dumps(agent.ports)}\n")
            sys.stderr.flush()
            outcomes = agent.run_answer()
            if not outcomes:
                empty = Outcome(args.record)
                empty.error = f"no call within {args.timeout}s"
                outcomes = [empty]
            # One line: the first call's outcome, with the others (if any) nested.
            first = json.loads(outcomes[0].as_json("answer"))
            if len(outcomes) > 1:
                first["calls"] = [json.loads(o.as_json("answer")) for o in outcomes]
            lines.append(json.dumps(first))
    except Exception as exc:  # noqa: BLE001 - report, never hang
        traceback.print_exc(file=sys.stderr)
        broken = Outcome(args.record)
        detail = exc.info() if isinstance(exc, pj.Error) else str(exc)
        broken.error = f"{type(exc).__name__}: {detail}"
        lines.append(broken.as_json(args.mode))
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result_fd, (lines[-1] + "\n").encode())
    # pjsua2's libDestroy / Call destructors can assert or crash: skip them.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
