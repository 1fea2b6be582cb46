"""One H.323 call-setup cycle for the call-setup benchmark (bench/setup_rate.py, issue 6).

A cycle is the quickest path a real endpoint takes into a meeting: Setup with Fast Start
G.711 proposals (H.323 section 8.1.7.1) and H.245 tunnelling (section 8.2.1), so media can flow
from Connect on with no separate H.245 connection and no logical channel round trips. Then:

1. Connect: the gateway sends it only once the WebRTC leg has joined the core
   (gateway/h323_calls.py awaits ``MediaSession.start()``, i.e. ``webrtc.join()``, before
   ``conn.accept``), as the SIP side sends its 200, so every Connect includes that join;
2. G.711 (PCMU) both ways for ``media_s`` seconds, with RTP required back from the gateway;
3. ReleaseComplete from the caller (section 8.5), and the gateway must then close the TCP
   connection.

A cycle fails, counted by kind, when: no Connect came within ``setup_timeout`` (the caller
then sends ReleaseComplete and gives up, as the SIP cycle CANCELs), the gateway released the
call (its ReleaseComplete reason, Q.931 cause and Display text are the kind), no RTP came back,
or the gateway did not close the connection within ``CLOSE_TIMEOUT`` after our release.
Setup time is Setup sent -> Connect received.

**Why threads around tests/peers/h323_caller.py, not an asyncio caller.** The project's own
H.323 caller is written from the standards on the codec layer (h323.tpkt/q931/h225/h245) and
none of the gateway's state machines; an asyncio variant here would be a second H.323 endpoint
to keep in step with it (Setup and Fast Start building, tunnelled TCS/MSD answers, release).
So each cycle runs :class:`TimedCaller` (a subclass adding the timings and the two checks above)
in a bounded :class:`~concurrent.futures.ThreadPoolExecutor` through ``loop.run_in_executor``.
The price is the callers' CPU: each running caller polls its sockets every 5 ms while media
flows (one thread per concurrent cycle, all under one GIL). The benchmark reports the callers'
own CPU per cycle (``time.process_time()`` of this process) and how late each cycle's thread
started after its scheduled time, so a rate limited by the callers can be told from one the
gateway failed. Measured: 20-50 ms of caller CPU per cycle (SIP: 11-24), so the threads would
fill one core near 30 cycles/s, far above the gateway's ceiling today (docs/performance.md).
:class:`TimedCaller` hooks four of the caller's methods (``_setup``, ``_on_signalling``,
``_read``, ``_drain``); tests/unit/test_bench_setup_rate.py (whole cycles against scripted
loopback callees) and the setup smoke test (against the gateway) run them, so a change to the
caller that breaks the hooks shows there.

The H.323 listener has no per-source rate limit (sip/ratelimit.py is for SIP only), so all
callers dial from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.peers.h323_caller import H323Caller

#: Seconds the gateway has to close the TCP connection after our ReleaseComplete.
CLOSE_TIMEOUT = 2.0
#: Concurrent H.323 cycles at most (one thread each); beyond it cycles wait for a thread, which
#: the ``start_lag_ms`` figures show.
MAX_THREADS = 256
#: The cycle's label in the benchmark's table.
CYCLE = ("Setup (Fast Start G.711, H.245 tunnelled) -> Connect (WebRTC leg joined) -> {media_s:g} s "
         "G.711 -> ReleaseComplete, gateway closes TCP")


class TimedCaller(H323Caller):
    """:class:`H323Caller` with the setup time, a setup timeout, and whether the gateway closed
    the signalling connection after our ReleaseComplete."""

    def __init__(self, *args: Any, setup_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_timeout = setup_timeout
        self.setup_sent_at: float | None = None
        self.connected_at: float | None = None
        self.setup_timed_out = False
        self.closed_by_gateway: bool | None = None  # None: we never got to release

    def _setup(self) -> None:
        self.setup_sent_at = time.monotonic()
        super()._setup()

    def _on_signalling(self, payload: bytes) -> None:
        super()._on_signalling(payload)
        if self.result.connected and self.connected_at is None:
            self.connected_at = time.monotonic()

    def _read(self, readable: list[socket.socket]) -> None:
        """Each turn of the caller's loop: give up once Connect is later than the setup timeout."""
        super()._read(readable)
        if (self.connected_at is None and self.setup_sent_at is not None and self.sig is not None
                and self.sig.open and time.monotonic() - self.setup_sent_at > self.setup_timeout):
            self.setup_timed_out = True
            self._release("undefinedReason", "caller-setup-timeout")
            self.sig.open = False  # ends the caller's loop

    def _drain(self, until: float) -> None:
        """After our ReleaseComplete: the caller's own drain (the gateway's H.245 endSession or
        ReleaseComplete), then wait for the gateway to close the connection."""
        super()._drain(until)
        if self.sig is not None:
            self.closed_by_gateway = _wait_for_close(self.sig.sock, time.monotonic() + CLOSE_TIMEOUT)


def _wait_for_close(sock: socket.socket, deadline: float) -> bool:
    """True when the peer closed ``sock`` (EOF or reset) before ``deadline``; data is discarded."""
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except BlockingIOError:
            continue
        except OSError:  # reset by the peer: closed too
            return True
    return False


@dataclass(frozen=True)
class CycleOutcome:
    """What one H.323 cycle measured: ``failure`` is None when every step passed."""

    failure: str | None
    setup_ms: float | None
    start_lag_ms: float


def run_cycle(port: int, meeting: str, *, media_s: float, setup_timeout: float,
              scheduled_at: float) -> CycleOutcome:
    """One cycle (blocking: run it in a worker thread) against the gateway's listener on
    127.0.0.1:``port``; ``scheduled_at`` (``time.monotonic()``) is when it was due to start."""
    start_lag_ms = (time.monotonic() - scheduled_at) * 1000
    caller = TimedCaller("127.0.0.1", port, meeting, fast_start=True, tunnelling=True, codec="PCMU",
                         seconds=media_s, timeout=setup_timeout + media_s + 5.0, setup_timeout=setup_timeout)
    caller.run()
    setup_ms = (None if caller.connected_at is None or caller.setup_sent_at is None
                else (caller.connected_at - caller.setup_sent_at) * 1000)
    return CycleOutcome(classify(caller), setup_ms, start_lag_ms)


def classify(caller: TimedCaller) -> str | None:
    """The failure kind of a finished cycle, or None. Kinds are short and stable (they are
    counted), so they name the step, not the call."""
    r = caller.result
    if r.released_by == "callee":
        return (f"released by the gateway: {r.release_reason} (cause {r.release_cause}"
                + (f", {r.release_display!r})" if r.release_display else ")"))
    if caller.setup_timed_out:
        return f"no Connect within {caller.setup_timeout:g} s"
    if r.error is not None and not r.connected:
        return f"setup: {r.error}"
    if not r.connected:
        return "connection closed before Connect"
    if not r.fast_start_accepted:
        return "Connect without a Fast Start answer"
    if r.rtp_in == 0:
        return "no RTP back from the gateway"
    if r.error is not None:
        return f"media: {r.error}"
    if caller.closed_by_gateway is not True:
        return f"gateway did not close TCP within {CLOSE_TIMEOUT:g} s of ReleaseComplete"
    return None


class H323Callers:
    """The H.323 side of a call-setup rate: cycles in worker threads against ``port``."""

    protocol = "h323"

    def __init__(self, port: int, *, media_s: float, setup_timeout: float) -> None:
        self.port, self.media_s, self.setup_timeout = port, media_s, setup_timeout
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="h323-cycle")
        self.start_lags_ms: list[float] = []

    async def cycle(self, meeting: str) -> dict[str, Any]:
        scheduled_at = time.monotonic()
        out = await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: run_cycle(self.port, meeting, media_s=self.media_s,
                                          setup_timeout=self.setup_timeout, scheduled_at=scheduled_at))
        self.start_lags_ms.append(out.start_lag_ms)
        return {"ok": out.failure is None, "failure": out.failure, "setup_ms": out.setup_ms}

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
