"""The core's HTTP resource without sockets: routing, status codes and reasons, CORS, static files.

Requests are ``twisted.web.test.requesthelper.DummyRequest`` rendered through
the real resource tree; handlers that go async are awaited on the shared
asyncio loop (the asyncio reactor is installed once for the module).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.support.core_server import loop_and_reactor, run

# requesthelper imports twisted.internet.reactor: the asyncio reactor must be installed first.
loop_and_reactor()

from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

OFFER_WITHOUT_FINGERPRINT = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=sendonly\r\na=mid:0\r\n"
)


@pytest.fixture(scope="module")
def reactor() -> Any:
    return loop_and_reactor()[1]


@pytest.fixture
def root(reactor: Any) -> Resource:
    from gateway.core.conference import ConferenceCore
    from gateway.core.http import build_core_resource

    core = ConferenceCore()
    yield build_core_resource(core, reactor=reactor)
    run(core.close())


def request(root: Resource, method: str, path: str, body: bytes = b"",
            content_type: str | None = None, args: dict[str, str] | None = None) -> DummyRequest:
    """Render ``method path`` through the tree and wait for the response; return the finished request."""
    segments = [s.encode() for s in path.lstrip("/").split("/")]
    req = DummyRequest(segments)
    req.method = method.encode()
    req.uri = req.path = path.encode()
    req.content = io.BytesIO(body)
    if content_type is not None:
        req.requestHeaders.setRawHeaders(b"content-type", [content_type.encode()])
    for name, value in (args or {}).items():
        req.addArg(name.encode(), value.encode())
    resource = getChildForRequest(root, req)
    result = resource.render(req)
    if result is NOT_DONE_YET:
        loop, _ = loop_and_reactor()
        if not req.finished:
            run(req.notifyFinish().asFuture(loop), timeout=30)
    else:
        req.write(result)
        req.finish()
    return req


def body(req: DummyRequest) -> str:
    return b"".join(req.written).decode()


def header(req: DummyRequest, name: str) -> str | None:
    values = req.responseHeaders.getRawHeaders(name.encode())
    return values[0].decode() if values else None


@pytest.mark.parametrize("kind", ["whip", "whep"])
def test_post_needs_application_sdp(root: Resource, kind: str) -> None:
    req = request(root, "POST", f"/{kind}/room1", b"v=0\r\n", content_type="text/plain")
    assert req.responseCode == 415
    assert "application/sdp" in body(req)
    assert header(req, "Access-Control-Allow-Origin") == "*"
    assert request(root, "POST", f"/{kind}/room1", b"v=0\r\n").responseCode == 415


@pytest.mark.parametrize("meeting", ["bad%20id", "a" * 65, "semi;colon", "..", "caf\u00e9"])
def test_meeting_id_outside_the_safe_charset_is_400(root: Resource, meeting: str) -> None:
    req = request(root, "POST", f"/whip/{meeting}", b"v=0\r\n", content_type="application/sdp")
    assert req.responseCode == 400
    assert "meeting id" in body(req)
    assert request(root, "GET", f"/m/{meeting}").responseCode == 400


@pytest.mark.parametrize(("offer", "reason"), [
    (b"hello", "v=0"),
    (b"v=0\r\ns=-\r\n", "no audio or video"),
    (OFFER_WITHOUT_FINGERPRINT.encode(), "SDP offer"),
    (b"\xff\xfe", "UTF-8"),
])
def test_bad_sdp_is_400_with_a_reason(root: Resource, offer: bytes, reason: str) -> None:
    req = request(root, "POST", "/whip/room1", offer, content_type="application/sdp; charset=utf-8")
    assert req.responseCode == 400, body(req)
    assert reason in body(req)
    assert header(req, "Content-Type").startswith("text/plain")


def test_failed_offer_leaves_no_meeting_behind(root: Resource) -> None:
    core = root.children[b"whip"].core
    request(root, "POST", "/whep/room2", OFFER_WITHOUT_FINGERPRINT.encode(), content_type="application/sdp")
    assert core.meeting_ids() == []


def test_oversized_offer_is_413(root: Resource) -> None:
    req = request(root, "POST", "/whip/room1", b"v=0\r\n" + b"a" * 70_000, content_type="application/sdp")
    assert req.responseCode == 413


def test_bad_exclude_is_400(root: Resource) -> None:
    req = request(root, "POST", "/whep/room1", b"v=0\r\n", content_type="application/sdp",
                  args={"exclude": "../x"})
    assert req.responseCode == 400


@pytest.mark.parametrize("path", ["/whip/room1/nobody", "/whep/room1/nobody", "/whip/room1/a.b",
                                  "/whip/room1", "/whep/room1/x/y"])
def test_delete_of_unknown_resource_is_404(root: Resource, path: str) -> None:
    assert request(root, "DELETE", path).responseCode == 404


def test_preflight_allows_post_delete_and_exposes_location(root: Resource) -> None:
    req = request(root, "OPTIONS", "/whip/room1")
    assert req.responseCode == 204
    assert "POST" in header(req, "Access-Control-Allow-Methods")
    assert "DELETE" in header(req, "Access-Control-Allow-Methods")
    assert "Content-Type" in header(req, "Access-Control-Allow-Headers")
    assert "Location" in header(req, "Access-Control-Expose-Headers")
    assert header(req, "Access-Control-Allow-Origin") == "*"


def test_healthz(root: Resource) -> None:
    req = request(root, "GET", "/healthz")
    assert req.responseCode == 200 and body(req) == "ok"


def test_meeting_page_and_its_script(root: Resource) -> None:
    page = request(root, "GET", "/m/room-1.a_b")
    assert page.responseCode == 200
    assert header(page, "Content-Type").startswith("text/html")
    assert "/static/meeting.js" in body(page)
    assert "default-src 'self'" in header(page, "Content-Security-Policy")
    script = request(root, "GET", "/static/meeting.js")
    assert script.responseCode == 200
    assert header(script, "Content-Type").startswith("text/javascript")
    assert "window.roomgate" in body(script)


@pytest.mark.parametrize("path", ["/static/", "/static/..", "/static/.hidden", "/static/a/b.js",
                                  "/static/nope.js", "/static/..%2Fhttp.py", "/nowhere"])
def test_static_serves_only_its_own_files(root: Resource, path: str) -> None:
    assert request(root, "GET", path).responseCode == 404


def test_get_on_whip_is_405(root: Resource) -> None:
    req = DummyRequest([b"room1"])
    req.method = b"GET"
    from twisted.web.error import UnsupportedMethod

    with pytest.raises(UnsupportedMethod):
        root.children[b"whip"].render(req)


@pytest.mark.parametrize("args", [{"leg": "skype"}, {"enc": "rot13"}, {"leg": "sip", "enc": "none"}])
def test_whip_leg_and_enc_outside_their_vocabularies_are_400(root: Resource, args: dict[str, str]) -> None:
    """The page's lock/warning depends on these: an unknown value is refused, never shown as a lock."""
    req = request(root, "POST", "/whip/room1", b"v=0\r\n", content_type="application/sdp", args=args)
    assert req.responseCode == 400 and "leg must be one of" in body(req), body(req)
    core = root.children[b"whip"].core
    assert core.meeting_ids() == []


def test_participants_roster_is_json_without_ids(root: Resource) -> None:
    req = request(root, "GET", "/m/room9/participants")
    assert req.responseCode == 200 and header(req, "Content-Type") == "application/json"
    import json

    assert json.loads(body(req)) == {"meeting": "room9", "participants": []}
    assert request(root, "GET", "/m/bad%20id/participants").responseCode == 400
