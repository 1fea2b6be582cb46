"""Dialog state on the UAS side and requests within it (RFC 3261 12).

A UAS creates the dialog from the INVITE and the To-tag it puts in its
response (12.1.1): the route set is the Record-Route list in order, the remote
target is the INVITE's Contact, the remote sequence number is the INVITE's CSeq.
Our own requests (BYE) take the next local sequence number (12.2.1.1).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sip.headers import Headers
from sip.message import SipRequest
from sip.uri import NameAddr, SipUri, UriError


def new_tag() -> str:
    """A globally unique tag (RFC 3261 19.3: at least 32 bits of randomness)."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """A branch with the RFC 3261 magic cookie (8.1.1.7)."""
    return "z9hG4bK" + secrets.token_hex(10)


@dataclass
class Dialog:
    """Dialog ID (Call-ID, local tag, remote tag) and the state to send requests in it."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: SipUri | None
    route_set: list[str] = field(default_factory=list)
    remote_seq: int | None = None
    local_seq: int = 0
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag) as RFC 3261 12 defines the dialog ID."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """The UAS side of 12.1.1."""
        frm = invite.from_addr
        to = invite.to_addr
        target: SipUri | None = None
        contacts = invite.headers.values("Contact")
        if contacts:
            try:
                target = NameAddr.parse(contacts[0]).uri
            except UriError:
                target = None
        to.params["tag"] = local_tag
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag or "",
            local_uri=str(to),
            remote_uri=str(frm),
            remote_target=target,
            route_set=invite.headers.values("Record-Route"),
            remote_seq=invite.cseq[0],
            secure=invite.uri.scheme == "sips",
        )

    def build_request(self, method: str, via: str, extra: Headers | None = None) -> SipRequest:
        """A request within the dialog (12.2.1.1), loose routing assumed (lr in the route set)."""
        self.local_seq += 1
        target = self.remote_target or NameAddr.parse(self.remote_uri).uri
        req = SipRequest(method, target)
        h = req.headers
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for route in self.route_set:
            h.add("Route", route)
        h.add("From", self.local_uri)
        h.add("To", self.remote_uri)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.local_seq} {method}")
        for name, value in extra or ():
            h.add(name, value)
        return req
