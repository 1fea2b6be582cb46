"""Policy reload: a new policy file is validated whole and swapped into every call controller.

Why a module of its own: the reload has three triggers (SIGHUP, the file changing on disk, the
control API's ``POST /api/v1/policy/reload``) and they must all behave the same way:

* the file is parsed and validated completely before anything changes; a bad file is refused
  (``policy.reload.failed`` with one ``FILE:LINE:COL: reason`` line per error) and the policy in
  force stays in force;
* a good one is handed to each controller's ``apply_policy()`` in one synchronous step on the
  event loop, so no call is ever admitted half under the old and half under the new policy;
* calls in progress keep the policy they were admitted under, except that when the new policy
  *tightens* ``legacy_media`` or ``signaling`` for their meeting so that the call would now be
  refused, they are ended (BYE with a ``Reason:`` naming the rule) -- unless the policy says
  ``on_tighten: keep``.  :func:`tightened_out` is that test, shared by SIP and H.323;
* calls still *joining* (in the IVR with their meeting chosen, or waiting in the lobby) were
  never admitted into the meeting, so the new policy decides for them whatever ``on_tighten``
  says: :func:`joining_refused` re-checks them (every rule but the PIN, which the IVR still asks
  for, and the head count, which is checked when they join) and a refusal ends them the same way.

The file is watched by polling its ``stat()`` once a second (mtime, size, inode): no new
dependency, and it also catches editors that replace the file by renaming a new one over it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.admission import CallProtocol, MediaSecurity, Refuse, decide
from gateway.policy import Policy, PolicyError, load_policy

log = structlog.get_logger("gateway.policy_reload")

#: How often the policy file's ``stat()`` is polled, in seconds.
POLL_INTERVAL = 1.0


class PolicyTarget(Protocol):
    """Something that holds a policy and admits calls with it (the SIP and H.323 controllers)."""

    def apply_policy(self, policy: Policy) -> int:
        """Use ``policy`` from now on; returns how many calls in progress it ended."""


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did: ``ok`` (swapped in) or not, with the errors that refused it."""

    ok: bool
    trigger: str
    errors: tuple[str, ...] = ()
    ended_calls: int = 0
    meetings: int = 0

    def body(self) -> dict[str, Any]:
        """The control API's JSON answer (see ``docs/openapi.yaml``, ``PolicyReload``)."""
        return {"reloaded": self.ok, "errors": list(self.errors), "ended_calls": self.ended_calls,
                "meetings": self.meetings}


def tightened_out(policy: Policy, *, meeting: str, protocol: CallProtocol, transport: str,
                  legacy_encryption: str) -> Refuse | None:
    """The refusal ``policy`` would now give a call already in progress, if -- and only if -- it
    is by the meeting's ``legacy_media`` or ``signaling`` rule (the two keys a reload may tighten
    under a live call; other changes, e.g. ``protocols``, apply to new calls only)."""
    security: MediaSecurity = "sdes" if legacy_encryption == "sdes-srtp" else "plain"
    decision = decide(policy, meeting=meeting, protocol=protocol, transport=transport,
                      media_security=security)
    if not isinstance(decision, Refuse) or decision.policy is None:
        return None
    mp = decision.policy
    if decision.rule in (mp.rule("legacy_media"), mp.rule("signaling")):
        return decision
    return None


def joining_refused(policy: Policy, *, meeting: str, protocol: CallProtocol, transport: str,
                    legacy_encryption: str, source: str | None) -> Refuse | None:
    """The refusal ``policy`` gives a call still joining ``meeting`` (IVR or lobby), or None.

    Every admission rule applies (the meeting may have gone, the protocol or the caller's network
    may no longer be allowed, its media may no longer be good enough) except the PIN -- a caller
    in the IVR has not entered it yet, one in the lobby already did -- and ``max_participants``,
    which is counted when the call joins."""
    security: MediaSecurity = "sdes" if legacy_encryption == "sdes-srtp" else "plain"
    decision = decide(policy, meeting=meeting, protocol=protocol, transport=transport,
                      media_security=security, source=source)
    return decision if isinstance(decision, Refuse) else None


def tightened_reason(refusal: Refuse) -> str:
    """The BYE's ``Reason:`` text for a call ended by a reload: names the meeting and the rule."""
    return f"policy reloaded: {refusal.warning}"


@dataclass
class PolicyReloader:
    """Reloads the policy at ``path`` into ``targets``; keeps the policy in force on any error."""

    path: Path
    targets: Sequence[PolicyTarget]
    current: Policy
    metrics: Any = None
    _stamp: tuple[int, int, int] | None = field(default=None, init=False)
    _poller: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stamp = self._stat()

    def reload(self, trigger: str) -> ReloadResult:
        """Validate the file and, if it is good, swap it into every target at once."""
        self._stamp = self._stat()
        name = str(self.path)
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            errors = tuple(str(e) for e in exc.errors) or (str(exc),)
            log.error("policy.reload.failed", file=name, trigger=trigger, errors=list(errors),
                      detail="the policy in force is unchanged")
            self._count("failed")
            return ReloadResult(False, trigger, errors=errors, meetings=len(self.current.meetings))
        ended = 0
        for target in self.targets:  # synchronous: no call is admitted between two targets
            ended += target.apply_policy(policy)
        self.current = policy
        log.info("policy.reloaded", file=name, trigger=trigger, meetings=len(policy.meetings),
                 unknown_meetings=policy.unknown_meetings, on_tighten=policy.on_tighten,
                 ended_calls=ended)
        self._count("ok")
        return ReloadResult(True, trigger, ended_calls=ended, meetings=len(policy.meetings))

    def poll(self) -> ReloadResult | None:
        """Reload if the file changed since the last look (or since it was last reloaded)."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:  # missing for a moment: wait for the new file
            return None
        return self.reload("file-change")

    def start_watching(self, reactor: Any, interval: float = POLL_INTERVAL) -> None:
        """Poll the file every ``interval`` seconds on ``reactor`` until :meth:`stop_watching`."""
        from twisted.internet.task import LoopingCall

        loop = LoopingCall(self._poll_safely)
        loop.clock = reactor
        loop.start(interval, now=False)
        self._poller = loop

    def stop_watching(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None and poller.running:
            poller.stop()

    def _poll_safely(self) -> None:
        try:
            self.poll()
        except Exception as exc:  # noqa: BLE001 - a failed poll must not stop the watching
            log.error("policy.reload.failed", file=str(self.path), trigger="file-change",
                      errors=[f"{type(exc).__name__}: {exc}"], detail="the policy in force is unchanged")
            self._count("failed")

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # missing for a moment (an editor renaming): the next change reloads
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.policy_reload(result)


def on_hangup(reload: Callable[[str], ReloadResult], reactor: Any) -> Callable[..., None]:
    """A SIGHUP handler that runs the reload on the reactor (not inside the signal handler)."""

    def handler(*_: Any) -> None:
        reactor.callFromThread(reload, "sighup")

    return handler
