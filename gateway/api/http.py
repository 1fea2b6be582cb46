"""twisted.web resources for the control API (HTTPS) and ``/metrics``, and their listeners.

Both run on the gateway's one reactor. Handlers are coroutines (token checks run
PBKDF2 in a worker thread), bridged to twisted.web with ``NOT_DONE_YET``.
Neither listener writes access logs: they would carry client addresses.

Authentication follows RFC 6750: no or a wrong token -> ``401`` with
``WWW-Authenticate: Bearer``; a token whose scope is too small -> ``403`` with
``error="insufficient_scope"``. Every command (``DELETE``, ``POST``, ``PUT``) is an ``audit.command``
log event naming the token id, the action, the target and the result; the token
itself is never logged.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet import ssl
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bridge.dtmf_sender import DEFAULT_DURATION_MS, DtmfError
from gateway.api.service import CommandResult, ControlService
from gateway.api.tokens import Scope, TokenRecord, TokenVerifier, scope_allows
from gateway.live_meeting import InvalidPin
from gateway.metrics import Metrics

log = structlog.get_logger("gateway.api")

_ID = r"[A-Za-z0-9._-]{1,64}"
REALM = "roomgate"


class ApiStartError(Exception):
    """The control API or metrics listener could not start (unreadable or mismatched TLS files)."""


class QuietSite(Site):
    """A Site without access logs (they would record client IP addresses)."""

    def log(self, request: Any) -> None:
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[ControlService, dict[str, str]], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    scope: Scope
    handler: Handler
    action: str | None = None
    """Set for commands: the audit log's ``action``."""


def _error(status: int, code: str, message: str, *headers: tuple[str, str]) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, tuple(headers))


async def _health(svc: ControlService, _: dict[str, str]) -> Reply:
    return Reply(200, svc.health())


async def _ready(svc: ControlService, _: dict[str, str]) -> Reply:
    ok, body = svc.readiness()
    return Reply(200 if ok else 503, body)


async def _meetings(svc: ControlService, _: dict[str, str]) -> Reply:
    return Reply(200, svc.meetings())


async def _meeting(svc: ControlService, p: dict[str, str]) -> Reply:
    body = svc.meeting(p["meeting"])
    return Reply(200, body) if body is not None else _error(404, "not_found", "no such meeting")


async def _end_meeting(svc: ControlService, p: dict[str, str]) -> Reply:
    result = await svc.end_meeting(p["meeting"])
    return Reply(200, result.body) if result.found else _error(404, "not_found", "no such meeting")


async def _remove_participant(svc: ControlService, p: dict[str, str]) -> Reply:
    result = await svc.remove_participant(p["meeting"], p["participant"])
    if not result.found:
        return _error(404, "not_found", "no such participant in this meeting")
    return Reply(200, result.body)


async def _admit_participant(svc: ControlService, p: dict[str, str]) -> Reply:
    result = await svc.admit_participant(p["meeting"], p["participant"])
    if not result.found:
        return _error(404, "not_found", "no such caller waiting in this meeting's lobby")
    return Reply(200, result.body)


def _command_reply(result: CommandResult, missing: str) -> Reply:
    """200 with the body, 404 (``missing`` says what), or 409 with why the target cannot."""
    if not result.found:
        return _error(404, "not_found", missing)
    if result.conflict is not None:
        return _error(409, "conflict", result.conflict)
    return Reply(200, result.body)


async def _lock_meeting(svc: ControlService, p: dict[str, str]) -> Reply:
    return _command_reply(svc.lock_meeting(p["meeting"], True), "no such running meeting")


async def _unlock_meeting(svc: ControlService, p: dict[str, str]) -> Reply:
    return _command_reply(svc.lock_meeting(p["meeting"], False), "no such running meeting")


async def _change_pin(svc: ControlService, p: dict[str, str]) -> Reply:
    try:
        body = json.loads(p.get(BODY_PARAM) or "null")
    except ValueError:
        body = None
    pin = body.get("pin") if isinstance(body, dict) else None
    if not isinstance(pin, str):
        return _error(400, "bad_request", 'send {"pin": "<1-16 digits>"} as application/json')
    try:
        return _command_reply(svc.change_pin(p["meeting"], pin), "no such running meeting")
    except InvalidPin as exc:  # the message never contains the PIN
        return _error(400, "bad_request", str(exc))


async def _mute_participant(svc: ControlService, p: dict[str, str]) -> Reply:
    return _command_reply(svc.mute_participant(p["meeting"], p["participant"], True),
                          "no such participant in this meeting")


async def _unmute_participant(svc: ControlService, p: dict[str, str]) -> Reply:
    return _command_reply(svc.mute_participant(p["meeting"], p["participant"], False),
                          "no such participant in this meeting")


async def _send_dtmf(svc: ControlService, p: dict[str, str]) -> Reply:
    usage = 'send {"digits": "0-9 * # A-D", "duration_ms": 40..5000 (optional)} as application/json'
    try:
        body = json.loads(p.get(BODY_PARAM) or "null")
    except ValueError:
        body = None
    digits = body.get("digits") if isinstance(body, dict) else None
    duration = body.get("duration_ms", DEFAULT_DURATION_MS) if isinstance(body, dict) else None
    if not isinstance(digits, str) or not isinstance(duration, int) or isinstance(duration, bool):
        return _error(400, "bad_request", usage)
    try:
        return _command_reply(svc.send_dtmf(p["meeting"], p["participant"], digits, duration),
                              "no such participant in this meeting")
    except DtmfError as exc:  # the message names refused characters, never the digits sent
        return _error(400, "bad_request", f"{exc}; {usage}")


async def _reload_policy(svc: ControlService, _: dict[str, str]) -> Reply:
    result = svc.reload_policy()
    if not result.found:
        return _error(404, "not_found", "policy reload is not available on this gateway")
    # 422: the file was read but refused; the old policy is still in force (errors say why).
    return Reply(200 if result.body.get("reloaded") else 422, result.body)


ROUTES: tuple[Route, ...] = (
    Route("GET", re.compile(r"/api/v1/health"), "read", _health),
    Route("GET", re.compile(r"/api/v1/ready"), "read", _ready),
    Route("GET", re.compile(r"/api/v1/meetings"), "read", _meetings),
    Route("GET", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})"), "read", _meeting),
    Route("DELETE", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})"), "admin", _end_meeting,
          action="meeting.end"),
    Route("DELETE", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/participants/(?P<participant>{_ID})"),
          "operate", _remove_participant, action="participant.remove"),
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/participants/(?P<participant>{_ID})/admit"),
          "operate", _admit_participant, action="participant.admit"),
    Route("POST", re.compile(r"/api/v1/policy/reload"), "admin", _reload_policy, action="policy.reload"),
    # Editing a running meeting (operator overrides that end with the meeting: gateway.live_meeting).
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/lock"), "operate", _lock_meeting,
          action="meeting.lock"),
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/unlock"), "operate", _unlock_meeting,
          action="meeting.unlock"),
    Route("PUT", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/pin"), "operate", _change_pin,
          action="meeting.pin"),
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/participants/(?P<participant>{_ID})/mute"),
          "operate", _mute_participant, action="participant.mute"),
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/participants/(?P<participant>{_ID})/unmute"),
          "operate", _unmute_participant, action="participant.unmute"),
    Route("POST", re.compile(rf"/api/v1/meetings/(?P<meeting>{_ID})/participants/(?P<participant>{_ID})/dtmf"),
          "operate", _send_dtmf, action="participant.dtmf"),
)

_OUTCOMES = {200: "ok", 400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "bad_request", 409: "conflict", 422: "bad_request", 503: "ok"}
#: The request body (UTF-8 text, at most ``MAX_BODY`` bytes) as handlers see it in their params.
BODY_PARAM = "_body"
MAX_BODY = 4096


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.getHeader("authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class _AsyncResource(Resource):
    """Runs ``serve(request) -> Reply`` as a coroutine and writes its JSON reply."""

    isLeaf = True

    def render(self, request: Request) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        task = asyncio.ensure_future(self._serve_safely(request))
        task.add_done_callback(lambda t: self._write(request, t.result(), gone))
        return NOT_DONE_YET

    async def _serve_safely(self, request: Request) -> Reply:
        try:
            return await self.serve(request)
        except Exception as exc:  # noqa: BLE001 - an API bug must answer 500, not hang the client
            log.error("api.request.failed", error=type(exc).__name__, detail=str(exc)[:200])
            return _error(500, "internal", "internal error")

    async def serve(self, request: Request) -> Reply:
        raise NotImplementedError

    def _write(self, request: Request, reply: Reply, gone: list[bool]) -> None:
        if gone:
            return
        body = json.dumps(reply.body).encode() + b"\n"
        request.setResponseCode(reply.status)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "no-store")
        for name, value in reply.headers:
            request.setHeader(name, value)
        request.setHeader("Content-Length", str(len(body)))
        request.write(body)
        request.finish()


class ControlApiResource(_AsyncResource):
    """``/api/v1/...``: authenticate, authorise by scope, dispatch, audit commands."""

    def __init__(self, service: ControlService, verifier: TokenVerifier, metrics: Metrics | None) -> None:
        super().__init__()
        self._service = service
        self._verifier = verifier
        self._metrics = metrics

    async def serve(self, request: Request) -> Reply:
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace").rstrip("/") or "/"
        reply, route, params, who = await self._dispatch(request, method, path)
        if self._metrics is not None:
            self._metrics.api_request(method, _OUTCOMES.get(reply.status, "error"))
        if route is not None and route.action is not None:
            target = f"meeting/{params['meeting']}" if "meeting" in params else route.action.split(".")[0]
            if "participant" in params:
                target += f"/participant/{params['participant']}"
            log.info("audit.command", token=who.id if who else None, action=route.action, target=target,
                     result=_OUTCOMES.get(reply.status, "error"), status=reply.status)
        return reply

    async def _dispatch(self, request: Request, method: str, path: str
                        ) -> tuple[Reply, Route | None, dict[str, str], TokenRecord | None]:
        matches = [(r, m) for r in ROUTES if (m := r.pattern.fullmatch(path)) is not None]
        chosen = next(((r, m) for r, m in matches if r.method == method), None)
        route, params = (chosen[0], chosen[1].groupdict()) if chosen else (None, {})
        token = bearer_token(request)
        if token is None:
            log.info("api.auth.refused", reason="no-token", method=method)
            return (_error(401, "unauthorized", "a bearer token is required",
                           ("WWW-Authenticate", f'Bearer realm="{REALM}"')), route, params, None)
        who = await self._verifier.verify(token)
        if who is None:
            log.info("api.auth.refused", reason="invalid-token", method=method)
            return (_error(401, "unauthorized", "the token is not valid",
                           ("WWW-Authenticate", f'Bearer realm="{REALM}", error="invalid_token"')),
                    route, params, None)
        if route is None:
            if matches:
                allowed = ", ".join(sorted({r.method for r, _ in matches}))
                return _error(405, "method_not_allowed", f"use {allowed}", ("Allow", allowed)), None, {}, who
            return _error(404, "not_found", "no such endpoint"), None, {}, who
        if not scope_allows(who.scope, route.scope):
            log.info("api.auth.refused", reason="scope", token=who.id, method=method, needs=route.scope)
            return (_error(403, "forbidden", f"this needs a token of scope {route.scope}",
                           ("WWW-Authenticate",
                            f'Bearer realm="{REALM}", error="insufficient_scope", scope="{route.scope}"')),
                    route, params, who)
        if method in ("POST", "PUT"):  # a copy: the audit target is built from the path only
            raw = request.content.read(MAX_BODY) if request.content is not None else b""
            return (await route.handler(self._service, params | {BODY_PARAM: raw.decode("utf-8", "replace")}),
                    route, params, who)
        return await route.handler(self._service, params), route, params, who


class MetricsResource(Resource):
    """``GET /metrics``: the Prometheus text format, behind a bearer token when one is configured."""

    isLeaf = True

    def __init__(self, metrics: Metrics, verifier: TokenVerifier | None) -> None:
        super().__init__()
        self._metrics = metrics
        self._verifier = verifier

    def render_GET(self, request: Request) -> Any:
        if request.path.rstrip(b"/") != b"/metrics":
            request.setResponseCode(404)
            return b"not found\n"
        if self._verifier is None:
            return self._body(request)
        token = bearer_token(request)

        def finish(ok: bool) -> None:
            if ok:
                request.write(self._body(request))
            else:
                request.setResponseCode(401)
                request.setHeader("WWW-Authenticate", f'Bearer realm="{REALM}"')
                request.write(b"a bearer token is required\n")
            request.finish()

        if token is None:
            finish(False)
            return NOT_DONE_YET
        verifier = self._verifier
        task = asyncio.ensure_future(verifier.verify(token))
        task.add_done_callback(lambda t: finish(t.result() is not None))
        return NOT_DONE_YET

    def _body(self, request: Request) -> bytes:
        request.setHeader("Content-Type", CONTENT_TYPE_LATEST)
        return self._metrics.render()


def tls_options(cert_path: Path, key_path: Path) -> ssl.CertificateOptions:
    """Server TLS options (TLS 1.2+) from PEM files; the cert file may carry the chain after it."""
    from OpenSSL import crypto

    try:
        cert_pem, key_pem = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", cert_pem, re.DOTALL)
        if not blocks:
            raise ApiStartError(f"{cert_path}: no PEM certificate in it")
        certs = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
        options = ssl.CertificateOptions(privateKey=key, certificate=certs[0], extraCertChain=certs[1:],
                                         raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        options.getContext().check_privatekey()
    except ApiStartError:
        raise
    except (OSError, crypto.Error, ValueError) as exc:
        raise ApiStartError(f"control API TLS: cannot use {cert_path} / {key_path}: {exc}") from exc
    return options


def listen_control_api(reactor: Any, host: str, port: int, cert: Path, key: Path,
                       resource: ControlApiResource) -> Any:
    """Bind the HTTPS listener; returns the listening port."""
    return reactor.listenSSL(port, QuietSite(resource), tls_options(cert, key), interface=host)


def listen_metrics(reactor: Any, host: str, port: int, resource: MetricsResource) -> Any:
    """Bind the plain-HTTP metrics listener; returns the listening port."""
    return reactor.listenTCP(port, QuietSite(resource), interface=host)
