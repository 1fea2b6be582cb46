"""``roomgate``: check configuration and policy files, and run the gateway.

Exit codes are part of the interface (scripts and CI use ``policy check`` before a
reload): 0 valid / ran cleanly, 1 invalid (one ``FILE:LINE:COL: reason`` line per
problem on stderr), 2 a file could not be read or the command line is wrong.

``gateway.app`` (Twisted, aiortc) is imported only by ``run``, so the checks stay
fast and work on a machine that only validates files.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import structlog

from gateway import __version__
from gateway.config import ConfigError, ConfigUnreadable, load_config
from gateway.policy import SETTINGS, Policy, PolicyError, PolicyUnreadable, load_policy

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
#: ``policy explain``: the call would be refused (0 means admitted).
EXIT_REFUSED = 3
_SRTP_OFFERS = {"no": "plain", "plain": "plain", "yes": "sdes", "sdes": "sdes", "dtls": "dtls"}


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep structlog's info events (``policy.loaded``) off stdout while checking, then restore
    whatever configuration there was (the CLI may run inside tests or another program)."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(30),  # warning and above
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def _print_errors(messages: Sequence[str]) -> None:
    for line in messages:
        print(line, file=sys.stderr)


def _load_policy_or_report(path: str) -> Policy | int:
    """The policy at ``path``, or the exit code after printing why it could not be loaded."""
    with _quiet_logs():
        try:
            return load_policy(path)
        except PolicyUnreadable as exc:
            print(f"roomgate: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
        except PolicyError as exc:
            _print_errors([str(e) for e in exc.errors])
            return EXIT_INVALID


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = _load_policy_or_report(args.file)
    if isinstance(policy, int):
        return policy
    _print_errors([str(w) for w in policy.warnings])  # valid, but probably not what was meant
    warned = f", {len(policy.warnings)} warning{'' if len(policy.warnings) == 1 else 's'}" \
        if policy.warnings else ""
    print(f"{args.file}: OK: {policy.summary()}{warned}")
    return EXIT_OK


def cmd_policy_explain(args: argparse.Namespace) -> int:
    """Print what the policy decides for one hypothetical call, and the rule that decided it."""
    from gateway.admission import Admit, decide
    from gateway.dialstring import parse_dial_string

    policy = _load_policy_or_report(args.policy)
    if isinstance(policy, int):
        return policy
    dialled = parse_dial_string(args.meeting, is_meeting=policy.meetings.__contains__)
    pin = args.pin if args.pin is not None else dialled.pin
    if dialled.to_ivr:
        print("ivr: no meeting dialled; the IVR asks for the meeting id by DTMF")
        return EXIT_OK
    decision = decide(policy, meeting=dialled.meeting, protocol=args.protocol, transport=args.transport,
                      media_security=_SRTP_OFFERS[args.srtp], source=args.source,  # type: ignore[arg-type]
                      pin=pin, participants=args.participants)
    print(decision.explain())
    print(f"rule: {decision.rule}")
    if decision.policy is not None:
        for key in SETTINGS:
            print(f"  {key}: {decision.policy.rule(key)}")
    return EXIT_OK if isinstance(decision, Admit) else EXIT_REFUSED


def cmd_config_check(args: argparse.Namespace) -> int:
    with _quiet_logs():
        code, cfg = _load(args.file)
        if cfg is None:
            return code
        policy = load_policy(cfg.policy)  # validated by load_config; loaded again for the summary
    sip_listeners = (("udp", cfg.sip.udp), ("tcp", cfg.sip.tcp), ("tls", cfg.sip.tls))
    listeners = [f"sip/{name} {hp}" for name, hp in sip_listeners if hp is not None]
    core = cfg.core.url or "embedded"
    print(f"{args.file}: OK: {', '.join(listeners)}, http {cfg.http.listen}, media "
          f"{cfg.media.address} ports {cfg.media.ports}, core {core}")
    print(f"{cfg.policy}: OK: {policy.summary()}")
    return EXIT_OK


def _load(path: str) -> tuple[int, Any]:
    """(exit code, config or None), printing the errors."""
    try:
        return EXIT_OK, load_config(path)
    except ConfigUnreadable as exc:
        _print_errors([f"roomgate: {m}" for m in exc.messages])
        return EXIT_UNREADABLE, None
    except ConfigError as exc:
        _print_errors(exc.messages)
        return EXIT_INVALID, None


def cmd_run(args: argparse.Namespace) -> int:
    with _quiet_logs():
        code, cfg = _load(args.config)
    if cfg is None:
        return code
    from gateway import app  # lazily: Twisted/aiortc only when actually running

    return int(app.run(cfg))


def cmd_token_new(args: argparse.Namespace) -> int:
    """Print a new bearer token once, and the YAML that configures its hash (never the token)."""
    from gateway.api.tokens import TOKEN_ID, hash_token, new_token

    if args.id is not None and not TOKEN_ID.fullmatch(args.id):
        print("roomgate: --id must be 1-64 of A-Z a-z 0-9 . _ -", file=sys.stderr)
        return EXIT_UNREADABLE
    token = new_token()
    hashed = hash_token(token)
    print(f"token (shown once, store it now): {token}")
    if args.scope == "metrics":
        print("add under metrics: in gateway.yaml:")
        print(f'  token_hash: "{hashed}"')
    else:
        # The default id is random on its own: deriving it from the token would log part of it.
        token_id = args.id or f"{args.scope}-{secrets.token_hex(3)}"
        print("add under control.tokens: in gateway.yaml:")
        print(f'  - {{id: {token_id}, scope: {args.scope}, hash: "{hashed}"}}')
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomgate", description="SIP/H.323 to WebRTC meeting gateway.")
    parser.add_argument("--version", action="version", version=f"roomgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    policy = sub.add_parser("policy", help="policy file commands")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    policy_sub.required = True
    check = policy_sub.add_parser("check", help="validate a policy file (exit 0 valid, 1 invalid, "
                                                "2 unreadable)")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_policy_check)
    explain = policy_sub.add_parser(
        "explain", help="what the policy decides for one call, and the rule that decided it "
                        "(exit 0 admitted, 3 refused)")
    explain.add_argument("--policy", default="config/policy.yaml", metavar="FILE")
    explain.add_argument("--meeting", required=True,
                         help="what the caller dialled: 1001, 1001*1234, 1001.1234 or 1001#1234")
    explain.add_argument("--protocol", choices=("sip", "h323"), default="sip")
    explain.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    explain.add_argument("--srtp", choices=sorted(_SRTP_OFFERS), default="no",
                         help="what the offer has: no (plain RTP), yes/sdes (SDES-SRTP), dtls")
    explain.add_argument("--source", default=None, metavar="IP",
                         help="the caller's address (checked against allowed_networks)")
    explain.add_argument("--pin", default=None, help="the PIN the caller gives")
    explain.add_argument("--participants", type=int, default=None, metavar="N",
                         help="how many are in the meeting already (checked against max_participants)")
    explain.set_defaults(handler=cmd_policy_explain)

    config = sub.add_parser("config", help="node configuration commands")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.required = True
    ccheck = config_sub.add_parser("check", help="validate gateway.yaml and the policy it names")
    ccheck.add_argument("file", metavar="FILE")
    ccheck.set_defaults(handler=cmd_config_check)

    token = sub.add_parser("token", help="control API and metrics bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION")
    token_sub.required = True
    tnew = token_sub.add_parser("new", help="make a token: prints it once, and the YAML line with "
                                            "its hash for gateway.yaml")
    tnew.add_argument("--scope", required=True, choices=("read", "operate", "admin", "metrics"),
                      help="read: list and read; operate: also remove participants; admin: also end "
                           "meetings; metrics: scrape /metrics (metrics.token_hash)")
    tnew.add_argument("--id", metavar="NAME", help="token id named in audit logs (default: scope + "
                                                   "a short random suffix)")
    tnew.set_defaults(handler=cmd_token_new)

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="gateway.yaml")
    run.set_defaults(handler=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``roomgate`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --version, --help (0) and usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
