"""Bearer tokens for the control API: generation, PBKDF2 hashes, scopes, verification.

``gateway.yaml`` holds only hashes (``pbkdf2-sha256$<iterations>$<salt>$<hash>``,
salt and hash in unpadded standard base64), so a leaked configuration file does
not hand out access. Tokens are 256-bit random strings, so the PBKDF2 work
factor is defence in depth rather than what makes guessing hopeless; it is kept
moderate because every unknown token costs one derivation per configured hash.

Derivations run in a worker thread (``hashlib.pbkdf2_hmac`` releases the GIL), so a
flood of wrong tokens cannot stall the reactor that also clocks RTP, and a token
that verified once is remembered under a keyed digest (the key is random per
process, the token itself is never stored).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

Scope = Literal["read", "operate", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "operate", "admin")
"""Least privilege, in order: ``read`` lists and reads; ``operate`` also edits running meetings
(removes a participant); ``admin`` also ends meetings (and, later, reloads the policy)."""

HASH_SCHEME = "pbkdf2-sha256"
DEFAULT_ITERATIONS = 200_000
MIN_ITERATIONS = 10_000
TOKEN_PREFIX = "rgt_"
TOKEN_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_HASH = re.compile(rf"{HASH_SCHEME}\$(\d+)\$({_B64})\$({_B64})")


class TokenError(ValueError):
    """A token hash or token id is malformed."""


def scope_allows(have: Scope, need: Scope) -> bool:
    """Whether a token of scope ``have`` may do what needs ``need`` (admin > operate > read)."""
    return SCOPES.index(have) >= SCOPES.index(need)


def new_token() -> str:
    """A fresh bearer token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_token(token: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`` of ``token`` with a random 16-byte salt."""
    if iterations < MIN_ITERATIONS:
        raise TokenError(f"at least {MIN_ITERATIONS} iterations")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class ParsedHash:
    iterations: int
    salt: bytes
    digest: bytes


def parse_hash(text: str) -> ParsedHash:
    """Validate a hash line's value; raises :class:`TokenError` with a readable reason."""
    m = _HASH.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise TokenError(f"expected {HASH_SCHEME}$<iterations>$<salt base64>$<hash base64> "
                         "(as printed by `roomgate token new`)")
    iterations = int(m.group(1))
    if iterations < MIN_ITERATIONS:
        raise TokenError(f"{iterations} iterations is too few (at least {MIN_ITERATIONS})")
    try:
        salt, digest = _unb64(m.group(2)), _unb64(m.group(3))
    except ValueError:
        raise TokenError("salt or hash is not valid base64") from None
    if len(salt) < 8 or len(digest) != 32:
        raise TokenError("salt must be at least 8 bytes and the SHA-256 hash 32 bytes")
    return ParsedHash(iterations, salt, digest)


def verify_token(token: str, hashed: str | ParsedHash) -> bool:
    """Whether ``token`` matches ``hashed`` (constant-time comparison of the derived keys)."""
    parsed = parse_hash(hashed) if isinstance(hashed, str) else hashed
    candidate = hashlib.pbkdf2_hmac("sha256", token.encode(), parsed.salt, parsed.iterations)
    return hmac.compare_digest(candidate, parsed.digest)


@dataclass(frozen=True)
class TokenRecord:
    """One configured token: its id (what audit logs name), scope and hash."""

    id: str
    scope: Scope
    hash: str


class TokenVerifier:
    """Finds which configured token a presented bearer token is, without blocking the loop.

    Every configured hash is tried (each comparison constant-time) so the time taken does not
    tell which record matched. Results are cached under ``HMAC(process key, token)`` in small
    LRUs: a good token costs one derivation per process, a repeated wrong one costs none.
    """

    CACHE_SIZE = 256
    PARALLEL = 2
    """At most this many derivations at once: a flood of wrong tokens costs at most two cores."""

    def __init__(self, records: list[TokenRecord] | tuple[TokenRecord, ...]) -> None:
        self.records = tuple(records)
        self._parsed = [(r, parse_hash(r.hash)) for r in self.records]
        self._key = secrets.token_bytes(32)
        self._known: OrderedDict[bytes, TokenRecord | None] = OrderedDict()
        self._slots: asyncio.Semaphore | None = None

    def _cache_key(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def lookup(self, token: str) -> TokenRecord | None:
        """Synchronous verification (for the CLI and tests)."""
        found: TokenRecord | None = None
        for record, parsed in self._parsed:
            if verify_token(token, parsed) and found is None:
                found = record
        return found

    async def verify(self, token: str) -> TokenRecord | None:
        """The record ``token`` belongs to, or None; derivations run in a worker thread."""
        if not token or len(token) > 512:
            return None
        key = self._cache_key(token)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        if self._slots is None:  # created on the loop that uses it
            self._slots = asyncio.Semaphore(self.PARALLEL)
        async with self._slots:
            record = await asyncio.to_thread(self.lookup, token)
        self._known[key] = record
        while len(self._known) > self.CACHE_SIZE:
            self._known.popitem(last=False)
        return record
