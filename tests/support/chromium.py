"""A real browser peer: Debian's /usr/bin/chromium, headless, driven by Python Playwright.

Playwright drives the system Chromium through ``executable_path`` (never ``playwright install``:
nothing can be downloaded here). The browser gets fake media devices, so ``getUserMedia`` works
with no camera or microphone, and with ``fake_audio_wav`` its microphone plays that WAV (looped):
the browser then sends a known tone that the far end can measure.

    with launch_chromium(fake_audio_wav=tone_wav) as browser:
        page = browser.new_page()
        page.goto(url)
        samples, rate = record_remote_audio(page, "window.remoteStream", seconds=2)
    assert_tone(samples, rate, 1000)

``serve_directory`` serves a folder (or in-memory pages) on 127.0.0.1 for page tests.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = os.environ.get("ROOMGATE_CHROMIUM", "/usr/bin/chromium")

# Flags PEERS.md and this machine recommend. Playwright itself adds --headless (when headless)
# and --user-data-dir (launch_persistent_context's first argument), so they are not listed here.
BASE_FLAGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)


def chromium_flags(*, fake_audio_wav: Path | str | None = None, loop_audio: bool = True,
                   extra: Sequence[str] = ()) -> list[str]:
    """Command-line flags for a test browser (without --headless and --user-data-dir)."""
    flags = list(BASE_FLAGS)
    if fake_audio_wav is not None:
        path = str(Path(fake_audio_wav).resolve())
        flags.append(f"--use-file-for-fake-audio-capture={path}{'' if loop_audio else '%noloop'}")
    flags.extend(extra)
    return flags


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


@contextmanager
def launch_chromium(*, fake_audio_wav: Path | str | None = None, loop_audio: bool = True,
                    extra_args: Sequence[str] = (), headless: bool = True,
                    user_data_dir: Path | str | None = None,
                    timeout_ms: float = 30_000) -> Iterator[BrowserContext]:
    """A Playwright ``BrowserContext`` of a fresh headless Chromium (own temporary profile).

    Microphone and camera permissions are granted; ``fake_audio_wav`` is what its microphone
    captures. Closed (and the profile removed) on exit.
    """
    from playwright.sync_api import sync_playwright

    own_dir = user_data_dir is None
    profile = Path(tempfile.mkdtemp(prefix="roomgate-chromium-")) if own_dir else Path(user_data_dir)
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                headless=headless,
                args=chromium_flags(fake_audio_wav=fake_audio_wav, loop_audio=loop_audio,
                                    extra=extra_args),
                permissions=["microphone", "camera"],
                timeout=timeout_ms,
            )
            context.set_default_timeout(timeout_ms)
            try:
                yield context
            finally:
                context.close()
    finally:
        if own_dir:
            shutil.rmtree(profile, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    pages: Mapping[str, tuple[str, bytes]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path.split("?", 1)[0])
        if page is None:
            return super().do_GET()
        content_type, body = page
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(directory: Path | str | None = None, *,
                    pages: Mapping[str, str | bytes] | None = None) -> Iterator[str]:
    """Serve ``directory`` and/or in-memory ``pages`` ({"/index.html": html}) on 127.0.0.1:<free>.

    Yields the base URL (``http://127.0.0.1:PORT``). http://127.0.0.1 is a secure context, so
    getUserMedia works without TLS.
    """
    served: dict[str, tuple[str, bytes]] = {}
    for path, body in (pages or {}).items():
        data = body.encode() if isinstance(body, str) else body
        ctype = "text/html; charset=utf-8" if path.endswith((".html", "/")) else (
            "text/javascript" if path.endswith(".js") else "application/octet-stream")
        served[path] = (ctype, data)
    handler = type("Handler", (_QuietHandler,), {"pages": served})
    factory = functools.partial(handler, directory=str(directory or tempfile.gettempdir()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# In-page recorder: plays a MediaStream into an AudioContext and collects its samples as 16-bit
# PCM (base64). A remote WebRTC stream must also be attached to a media element or Chromium
# feeds WebAudio silence, so it is attached to a muted <audio>.
_RECORD_JS = """
async ([streamExpr, seconds]) => {
  const stream = eval(streamExpr);
  if (!stream) throw new Error('no stream at ' + streamExpr);
  const el = document.createElement('audio');
  el.muted = true; el.srcObject = stream; el.play().catch(() => {});
  document.body.appendChild(el);
  const ctx = new AudioContext();
  await ctx.resume();
  const src = ctx.createMediaStreamSource(stream);
  const node = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  let total = 0;
  const want = Math.round(seconds * ctx.sampleRate);
  const done = new Promise(resolve => {
    node.onaudioprocess = (ev) => {
      if (total >= want) return;
      const data = ev.inputBuffer.getChannelData(0);
      chunks.push(new Float32Array(data));
      total += data.length;
      if (total >= want) resolve();
    };
  });
  const sink = ctx.createGain(); sink.gain.value = 0;
  src.connect(node); node.connect(sink); sink.connect(ctx.destination);
  await done;
  src.disconnect(); node.disconnect(); await ctx.close(); el.remove();
  const pcm = new Int16Array(total);
  let i = 0;
  for (const c of chunks) for (const v of c) pcm[i++] = Math.max(-1, Math.min(1, v)) * 32767;
  let bin = '';
  const bytes = new Uint8Array(pcm.buffer);
  for (let j = 0; j < bytes.length; j += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(j, j + 0x8000));
  return {rate: ctx.sampleRate, pcm: btoa(bin)};
}
"""


def record_remote_audio(page: Page, stream_expr: str, seconds: float = 2.0
                        ) -> tuple[np.ndarray, int]:
    """Record ``seconds`` of the page's MediaStream found at JS expression ``stream_expr``.

    Returns (int16 samples, rate) for ``tests.support.audio.assert_tone``.
    """
    out = page.evaluate(_RECORD_JS, [stream_expr, seconds])
    samples = np.frombuffer(base64.b64decode(out["pcm"]), dtype=np.int16)
    return samples, int(out["rate"])


# getStats() of an RTCPeerConnection reduced to what media tests need (call with the JS
# expression of the connection: ``audio_stats(page, "window.pc")``).
_STATS_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  const report = await pc.getStats();
  const out = {inbound_audio_bytes: 0, inbound_audio_packets: 0, outbound_audio_bytes: 0,
               outbound_audio_packets: 0, audio_level: null, codec: null,
               local_candidate: null, remote_candidate: null, pair_state: null};
  const byId = new Map();
  report.forEach(s => byId.set(s.id, s));
  report.forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.inbound_audio_bytes += s.bytesReceived || 0;
      out.inbound_audio_packets += s.packetsReceived || 0;
      if (s.audioLevel !== undefined) out.audio_level = s.audioLevel;
      const c = byId.get(s.codecId); if (c) out.codec = c.mimeType;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outbound_audio_bytes += s.bytesSent || 0;
      out.outbound_audio_packets += s.packetsSent || 0;
    }
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = byId.get(s.selectedCandidatePairId);
      if (pair) {
        out.pair_state = pair.state;
        const l = byId.get(pair.localCandidateId), r = byId.get(pair.remoteCandidateId);
        if (l) out.local_candidate = `${l.address || l.ip}:${l.port}/${l.protocol}/${l.candidateType}`;
        if (r) out.remote_candidate = `${r.address || r.ip}:${r.port}/${r.protocol}/${r.candidateType}`;
      }
    }
  });
  return out;
}
"""


def audio_stats(page: Page, pc_expr: str) -> dict:
    """Audio RTP counters, codec and selected ICE pair of the page's RTCPeerConnection ``pc_expr``."""
    return page.evaluate(_STATS_JS, pc_expr)
