"""The project's own RAS peer (H.225.0 section 7.7), written from the standard with the codec
layer only (``h323.ras`` encoders/decoders), never with the gateway's ``ras_client`` or
``gatekeeper`` code paths.

- :class:`EndpointPeer`: an H.323 endpoint talking to a gatekeeper (the gateway in
  ``h323.gatekeeper: own`` mode): GRQ, RRQ, keep-alive RRQ, ARQ, DRQ, URQ, LRQ, and an IRR that
  asks for an IACK; each call sends one request and returns the decoded answer (retrying like
  H.225.0 section 7.9 says).
- :class:`GatekeeperPeer`: a minimal gatekeeper on a thread (the gateway registers to it):
  GCF, RCF with a chosen ``timeToLive``, ACF (or ARJ for the meetings in ``reject``; with
  ``irrFrequency`` when ``irr_frequency`` is set), DCF, UCF; :meth:`GatekeeperPeer.irq` sends an
  IRQ to the registered endpoint.  Every datagram it receives is kept in ``received`` with its
  arrival time (monotonic).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass

from h323 import ras
from h323.errors import RasError
from h323.h225 import Alias, TransportAddress


class RasPeerError(AssertionError):
    """The peer got no answer, or an answer that is not RAS."""


class EndpointPeer:
    """An endpoint on its own UDP socket; ``gatekeeper`` is the gateway's RAS address."""

    def __init__(self, gatekeeper: tuple[str, int], *, alias: str = "alice",
                 call_signal_port: int = 1720, timeout: float = 3.0) -> None:
        self.gatekeeper = gatekeeper
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout)
        self.ras_address = TransportAddress("127.0.0.1", self.sock.getsockname()[1])
        self.call_signal = TransportAddress("127.0.0.1", call_signal_port)
        self.alias = Alias("h323-ID", alias)
        self.endpoint_id: str | None = None
        self.gatekeeper_id: str | None = None
        self._seq = itertools.count(100)
        self.exchanges: list[tuple[str, str]] = []  # (request, answer) abbreviations

    def close(self) -> None:
        self.sock.close()

    def request(self, msg: ras.RasMessage, tries: int = 3) -> ras.RasMessage:
        data = msg.encode()
        for _ in range(tries):
            self.sock.sendto(data, self.gatekeeper)
            try:
                while True:
                    reply, _src = self.sock.recvfrom(4096)
                    answer = ras.decode(reply)
                    if answer.request_seq_num == msg.request_seq_num:
                        self.exchanges.append((msg.abbreviation, answer.abbreviation))
                        return answer
            except TimeoutError:
                continue
        raise RasPeerError(f"no answer to {msg.abbreviation}")

    def grq(self) -> ras.RasMessage:
        answer = self.request(ras.gatekeeper_request(next(self._seq), self.ras_address, aliases=(self.alias,),
                                                     role="terminal"))
        if answer.name == "gatekeeperConfirm":
            self.gatekeeper_id = answer.gatekeeper_identifier
        return answer

    def rrq(self, ttl: int = 60) -> ras.RasMessage:
        answer = self.request(ras.registration_request(
            next(self._seq), self.call_signal, self.ras_address, aliases=(self.alias,),
            gatekeeper_identifier=self.gatekeeper_id, time_to_live=ttl, role="terminal"))
        if answer.name == "registrationConfirm":
            self.endpoint_id = answer.endpoint_identifier
        return answer

    def keep_alive(self, ttl: int = 60, endpoint_id: str | None = None) -> ras.RasMessage:
        return self.request(ras.registration_request(
            next(self._seq), self.call_signal, self.ras_address, gatekeeper_identifier=self.gatekeeper_id,
            time_to_live=ttl, keep_alive=True, endpoint_identifier=endpoint_id or self.endpoint_id,
            role="terminal"))

    def arq(self, destination: str, call_id: bytes, *, endpoint_id: str | None = None) -> ras.RasMessage:
        return self.request(ras.admission_request(
            next(self._seq), endpoint_id or self.endpoint_id or "none", call_id, call_id, 7, answer_call=False,
            source=(self.alias,), destination=(Alias("dialledDigits", destination),),
            gatekeeper_identifier=self.gatekeeper_id))

    def drq(self, call_id: bytes) -> ras.RasMessage:
        return self.request(ras.disengage_request(next(self._seq), self.endpoint_id or "none", call_id,
                                                  call_id, 7, gatekeeper_identifier=self.gatekeeper_id))

    def urq(self) -> ras.RasMessage:
        return self.request(ras.unregistration_request(next(self._seq), self.call_signal,
                                                       endpoint_identifier=self.endpoint_id,
                                                       gatekeeper_identifier=self.gatekeeper_id))

    def lrq(self, destination: str) -> ras.RasMessage:
        return self.request(ras.location_request(next(self._seq), (Alias("dialledDigits", destination),),
                                                 self.ras_address))

    def irr(self, call_id: bytes) -> ras.RasMessage:
        """An unsolicited IRR about one call with ``needResponse`` TRUE: the answer is an IACK."""
        msg = ras.info_request_response(next(self._seq), self.endpoint_id or "none", self.ras_address,
                                        self.call_signal, (ras.PerCallInfo(7, call_id, call_id, self.call_signal),),
                                        unsolicited=True, role="terminal")
        msg.value["needResponse"] = True
        return self.request(msg)


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    message: ras.RasMessage
    source: tuple[str, int]


class GatekeeperPeer:
    """A minimal gatekeeper on a thread; ``port`` is its RAS port."""

    def __init__(self, *, time_to_live: int = 4, reject: tuple[str, ...] = (),
                 gatekeeper_id: str = "peer-gk", irr_frequency: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = TransportAddress("127.0.0.1", self.port)
        self.time_to_live = time_to_live
        self.reject = reject
        self.gatekeeper_id = gatekeeper_id
        self.irr_frequency = irr_frequency
        self.endpoint_id = "ep-" + os.urandom(3).hex()
        self._irq_seq = itertools.count(5000)
        self.received: list[Received] = []
        self.undecodable = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ras-gatekeeper-peer", daemon=True)

    def __enter__(self) -> GatekeeperPeer:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def names(self) -> list[str]:
        with self._lock:
            return [r.message.abbreviation + ("(keepAlive)" if r.message.keep_alive else "")
                    for r in self.received]

    def wait_for(self, abbreviation: str, *, count: int = 1, timeout: float = 15.0,
                 keep_alive: bool | None = None) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hits = [r for r in self.received if r.message.abbreviation == abbreviation
                        and (keep_alive is None or r.message.keep_alive == keep_alive)]
            if len(hits) >= count:
                return hits
            time.sleep(0.05)
        raise RasPeerError(f"saw {self.names()}, not {count} x {abbreviation}")

    def irq(self, call_reference: int = 0) -> int:
        """Send an IRQ (H.225.0 7.7.18) to where the endpoint's RRQ came from; returns its
        ``requestSeqNum`` (the IRR answering it carries the same)."""
        with self._lock:
            rrq = next((r for r in self.received if r.message.name == "registrationRequest"), None)
        if rrq is None:
            raise RasPeerError("no endpoint registered yet")
        seq = next(self._irq_seq)
        self.sock.sendto(ras.info_request(seq, call_reference).encode(), rrq.source)
        return seq

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                msg = ras.decode(data)
            except RasError:
                self.undecodable += 1
                continue
            with self._lock:
                self.received.append(Received(time.monotonic(), msg, src))
            answer = self._answer(msg)
            if answer is not None:
                self.sock.sendto(answer.encode(), src)

    def _answer(self, msg: ras.RasMessage) -> ras.RasMessage | None:
        seq = msg.request_seq_num or 0
        if msg.name == "gatekeeperRequest":
            return ras.gatekeeper_confirm(seq, self.address, self.gatekeeper_id)
        if msg.name == "registrationRequest":
            signal = msg.addresses("callSignalAddress")
            return ras.registration_confirm(seq, signal[0], self.endpoint_id, gatekeeper_identifier=self.gatekeeper_id,
                                            time_to_live=self.time_to_live)
        if msg.name == "admissionRequest":
            dialled = {str(a.value) for a in msg.aliases("destinationInfo")}
            if dialled & set(self.reject):
                return ras.reject(msg.name, seq, "requestDenied")
            dest = msg.addresses("destCallSignalAddress")
            return ras.admission_confirm(seq, dest[0] if dest else self.address, irr_frequency=self.irr_frequency)
        if msg.name == "disengageRequest":
            return ras.disengage_confirm(seq)
        if msg.name == "unregistrationRequest":
            return ras.unregistration_confirm(seq)
        return None
