"""The core's HTTP face on twisted.web: WHIP, WHEP, the meeting page, static files, /healthz.

Routes (the contract in docs/ARCHITECTURE.md)::

    POST    /whip/<meeting>              application/sdp offer -> 201, answer, Location /whip/<meeting>/<id>
    DELETE  /whip/<meeting>/<id>         -> 200 (404 if unknown)
    POST    /whep/<meeting>[?exclude=ID] application/sdp offer -> 201, answer, Location /whep/<meeting>/<id>
    DELETE  /whep/<meeting>/<id>         -> 200 (404 if unknown)
    OPTIONS /whip/..., /whep/...         CORS preflight -> 204
    GET     /m/<meeting>                 the meeting page
    GET     /m/<meeting>/participants    JSON: each publisher's name, leg and encryption (no ids, no IPs)
    GET     /static/<file>               the page's JS/CSS
    GET     /healthz                     -> 200 "ok"

Handlers that await the core return ``NOT_DONE_YET`` and run a coroutine on the
shared asyncio loop via ``Deferred.fromFuture(asyncio.ensure_future(...))``.
Every outcome is a response: typed ``CoreError`` -> its status with a plain-text
reason, anything unexpected -> 500 with a log line; nothing escapes to Twisted.
The global reactor is never imported: it is handed in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import structlog
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.core.conference import (
    MAX_SDP_BYTES,
    PARTICIPANT_ID,
    ConferenceCore,
    check_meeting_id,
)
from gateway.core.errors import BadParticipantId, BadSdp, CoreError, UnknownParticipant
from gateway.core.meeting import ParticipantKind

log = structlog.get_logger("gateway.core.http")

STATIC_DIR = Path(__file__).with_name("static")

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Expose-Headers": b"Location, Link",
}
PREFLIGHT_HEADERS = {
    b"Access-Control-Allow-Methods": b"POST, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"Content-Type, Authorization, If-Match",
    b"Access-Control-Max-Age": b"600",
    b"Accept-Post": b"application/sdp",
}
CONTENT_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}
PAGE_CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; media-src 'self' blob: mediastream:; frame-ancestors 'none'")


class _Response:
    """What a handler decided: status, extra headers, body (plain text unless a content type is given)."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[bytes, bytes] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


def _text(status: int, reason: str) -> _Response:
    return _Response(status, reason.encode("utf-8") + b"\n", {b"Content-Type": b"text/plain; charset=utf-8"})


def _send(request: Request, response: _Response) -> bytes:
    request.setResponseCode(response.status)
    for name, value in CORS_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"Cache-Control", b"no-store")
    for name, value in response.headers.items():
        request.setHeader(name, value)
    if response.body and not response.headers.get(b"Content-Type"):
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", str(len(response.body)).encode())
    return response.body


def _path(request: Request) -> list[str]:
    """The remaining path segments as text, with one trailing slash forgiven; non-UTF-8 becomes a bad id."""
    segments = list(request.postpath or [])
    if segments and segments[-1] == b"":
        segments.pop()
    return [s.decode("utf-8", "replace") for s in segments]


def _arg(request: Request, name: bytes) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name)
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _run(request: Request, handler: Callable[[], Awaitable[_Response]], *,
         cancel_on_disconnect: bool, on_abandoned: Callable[[_Response], Awaitable[None]] | None = None) -> Any:
    """Run ``handler`` on the asyncio loop and answer ``request`` with its result; returns NOT_DONE_YET.

    If the client goes away first, the response is not written; a POST's
    coroutine is cancelled (which undoes the half-made participant) and a result
    that arrived anyway goes to ``on_abandoned`` (which removes the participant
    whose Location nobody received).
    """
    gone = False

    async def respond() -> None:
        try:
            response = await handler()
        except CoreError as exc:
            response = _text(exc.status, exc.reason)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("core.http.failed", method=request.method.decode("ascii", "replace"))
            response = _text(500, "internal error")
        if gone:
            if on_abandoned is not None and response.status == 201:
                await on_abandoned(response)
            return
        try:
            body = _send(request, response)
            request.write(body)
            request.finish()
        except Exception:  # noqa: BLE001 - the connection may drop between our check and the write
            log.warning("core.http.write_failed")

    task = asyncio.ensure_future(respond())

    def disconnected(failure: Failure) -> None:
        nonlocal gone
        gone = True
        if cancel_on_disconnect and not task.done():
            task.cancel()

    request.notifyFinish().addErrback(disconnected)
    Deferred.fromFuture(task).addErrback(
        lambda f: log.error("core.http.task_failed", error=f.getErrorMessage()))
    return NOT_DONE_YET


class SignallingResource(Resource):
    """``/whip/...`` or ``/whep/...``: one kind of WebRTC ingest/egress endpoint (a leaf: routes itself)."""

    isLeaf = True

    def __init__(self, core: ConferenceCore, kind: ParticipantKind) -> None:
        super().__init__()
        self.core = core
        self.kind = kind

    def render_OPTIONS(self, request: Request) -> bytes:
        return _send(request, _Response(204, b"", dict(PREFLIGHT_HEADERS)))

    def render_POST(self, request: Request) -> Any:
        try:
            segments = _path(request)
            if len(segments) != 1:
                return _send(request, _text(404, f"POST to /{self.kind}/<meeting>"))
            meeting_id = check_meeting_id(segments[0])
            content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
            if content_type != b"application/sdp":
                return _send(request, _text(415, "Content-Type must be application/sdp"))
            body = request.content.read(MAX_SDP_BYTES + 1) if request.content is not None else b""
            if len(body) > MAX_SDP_BYTES:
                return _send(request, _text(413, f"SDP offer larger than {MAX_SDP_BYTES} bytes"))
            try:
                offer = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadSdp("SDP offer is not UTF-8 text") from None
            exclude = _arg(request, b"exclude") if self.kind == "whep" else None
            if exclude is not None and not PARTICIPANT_ID.fullmatch(exclude):
                raise BadParticipantId("exclude must be 1-64 characters of A-Z a-z 0-9 _ -")
            name = _arg(request, b"name")
            leg = _arg(request, b"leg") or "webrtc" if self.kind == "whip" else "webrtc"
            enc = _arg(request, b"enc") or "dtls-srtp" if self.kind == "whip" else "dtls-srtp"
        except CoreError as exc:
            return _send(request, _text(exc.status, exc.reason))

        async def handle() -> _Response:
            if self.kind == "whip":
                answer = await self.core.publish(meeting_id, offer, display_name=name, leg=leg, encryption=enc)
            else:
                answer = await self.core.subscribe(meeting_id, offer, exclude=exclude, display_name=name)
            location = f"/{self.kind}/{meeting_id}/{answer.participant_id}"
            return _Response(201, answer.sdp.encode("utf-8"), {
                b"Content-Type": b"application/sdp",
                b"Location": location.encode("ascii"),
                b"ETag": f'"{answer.participant_id}"'.encode("ascii"),
            })

        async def abandoned(response: _Response) -> None:
            participant_id = response.headers[b"Location"].decode("ascii").rsplit("/", 1)[1]
            log.info("core.http.abandoned", meeting=meeting_id, participant=participant_id)
            try:
                await self.core.leave(meeting_id, participant_id, self.kind)
            except UnknownParticipant:
                pass

        return _run(request, handle, cancel_on_disconnect=True, on_abandoned=abandoned)

    def render_DELETE(self, request: Request) -> Any:
        try:
            segments = _path(request)
            if len(segments) != 2:
                return _send(request, _text(404, f"DELETE /{self.kind}/<meeting>/<id>"))
            meeting_id = check_meeting_id(segments[0])
            participant_id = segments[1]
            if not PARTICIPANT_ID.fullmatch(participant_id):
                raise UnknownParticipant(f"no such {self.kind} in this meeting")
        except CoreError as exc:
            return _send(request, _text(exc.status, exc.reason))

        async def handle() -> _Response:
            await self.core.leave(meeting_id, participant_id, self.kind)
            return _text(200, "left")

        # A DELETE runs to completion even if its client hangs up: the leave is what was asked.
        return _run(request, handle, cancel_on_disconnect=False)


class MeetingPageResource(Resource):
    """``/m/<meeting>``: the meeting page (static HTML; the script reads the meeting id from the URL),
    and ``/m/<meeting>/participants``, the roster the page polls for its encryption indicators."""

    isLeaf = True

    def __init__(self, static_dir: Path, core: ConferenceCore | None = None) -> None:
        super().__init__()
        self.static_dir = static_dir
        self.core = core

    def render_GET(self, request: Request) -> bytes:
        segments = _path(request)
        if len(segments) == 2 and segments[1] == "participants" and self.core is not None:
            try:
                return _send(request, self._participants(check_meeting_id(segments[0])))
            except CoreError as exc:
                return _send(request, _text(exc.status, exc.reason))
        if len(segments) != 1:
            return _send(request, _text(404, "GET /m/<meeting>"))
        try:
            check_meeting_id(segments[0])
        except CoreError as exc:
            return _send(request, _text(exc.status, exc.reason))
        html = (self.static_dir / "meeting.html").read_bytes()
        return _send(request, _Response(200, html, {
            b"Content-Type": CONTENT_TYPES[".html"],
            b"Content-Security-Policy": PAGE_CSP,
            b"X-Content-Type-Options": b"nosniff",
            b"Referrer-Policy": b"no-referrer",
        }))


    def _participants(self, meeting_id: str) -> _Response:
        """Publishers only (a WHEP subscriber is the same person's playback), in join order.

        No core ids: they are the capability to ``DELETE /whip/<meeting>/<id>``, and this page is
        unauthenticated.  No addresses either; a legacy caller's name is the gateway's pseudonym."""
        assert self.core is not None
        shown = [{"name": p.display_name or "Guest", "leg": p.leg, "encryption": p.encryption,
                  "encrypted_to_gateway": p.encryption != "plain"}
                 for p in self.core.roster(meeting_id) if p.kind == "whip"]
        body = json.dumps({"meeting": meeting_id, "participants": shown}).encode("utf-8")
        return _Response(200, body, {b"Content-Type": b"application/json"})


class StaticResource(Resource):
    """``/static/<file>``: the page's own JS/CSS, one flat directory, no listings, no traversal."""

    isLeaf = True

    def __init__(self, static_dir: Path) -> None:
        super().__init__()
        self.static_dir = static_dir

    def render_GET(self, request: Request) -> bytes:
        segments = _path(request)
        name = segments[0] if len(segments) == 1 else ""
        path = self.static_dir / name
        content_type = CONTENT_TYPES.get(path.suffix)
        if (not name or name.startswith(".") or "/" in name or "\\" in name
                or content_type is None or not path.is_file()):
            return _send(request, _text(404, "not found"))
        return _send(request, _Response(200, path.read_bytes(), {
            b"Content-Type": content_type, b"X-Content-Type-Options": b"nosniff"}))


class HealthResource(Resource):
    """``/healthz``: the process is up and its loop is serving requests."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _send(request, _Response(200, b"ok", {b"Content-Type": b"text/plain; charset=utf-8"}))


class _NotFound(Resource):
    """Any path no route claims: a plain-text 404 (twisted's default page is HTML and deprecated)."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _send(request, _text(404, "not found"))


class _Root(Resource):
    """The listener's root: children are the routes; ``/`` itself says where to go."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        return _send(request, _text(404, "roomgate: open /m/<meeting> to join a meeting"))


def build_core_resource(core: ConferenceCore, *, reactor: Any, static_dir: Path | None = None) -> Resource:
    """The root resource of the gateway's HTTP listener with the core's routes mounted.

    Other parts of the gateway may ``putChild`` further routes (control API,
    metrics) on the returned resource. ``reactor`` is the running (asyncio)
    reactor, passed in because modules never import the global one; today's
    handlers need no timers of their own (they await on the shared asyncio loop).
    """
    del reactor
    static = static_dir or STATIC_DIR
    root = _Root()
    children: dict[bytes, Resource] = {
        b"whip": SignallingResource(core, "whip"),
        b"whep": SignallingResource(core, "whep"),
        b"m": MeetingPageResource(static, core),
        b"static": StaticResource(static),
        b"healthz": HealthResource(),
    }
    for name, child in children.items():
        root.putChild(name, cast(IResource, child))  # Resource implements IResource (zope, unseen by mypy)
    return root
