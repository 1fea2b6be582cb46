"""SDES: SRTP keys in SDP ``a=crypto`` attributes (RFC 4568), without I/O or crypto.

Grammar (RFC 4568 section 9.1)::

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params = key-param *(";" key-param)
    key-param  = "inline:" <base64 key||salt> ["|" lifetime] ["|" MKI ":" length]

:func:`parse_crypto` turns one attribute value into a :class:`CryptoAttribute` or raises
:class:`CryptoError` (typed, with a ``reason`` a Warning header can carry) for what is
malformed *or* what this gateway does not support: several master keys, an MKI (RFC 4568
section 6.1: pylibsrtp has no MKI support), a key lifetime shorter than we would ever
need to re-key for, and session parameters other than the window-size hint (section 6.3:
an answerer that does not understand a session parameter must not accept the attribute).

Suites (RFC 4568 section 6.2, RFC 7714 section 14.2 for AEAD): ``AES_CM_128_HMAC_SHA1_80``,
``AES_CM_128_HMAC_SHA1_32``, ``AEAD_AES_128_GCM`` and ``AEAD_AES_256_GCM``; the answer takes
the offer's attribute in that order of preference (section 7.1.1: one attribute, the
offer's tag and suite, our own key).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

#: Suite -> (master key bytes, master salt bytes): RFC 4568 6.2.1-6.2.2, RFC 7714 14.2.
SUITE_KEY_LENGTHS: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "AEAD_AES_128_GCM": (16, 12),
    "AEAD_AES_256_GCM": (32, 12),
}
#: The order in which the answer picks among the offer's crypto attributes (strongest
#: widely-interoperable first: the 80-bit tag, then 32, then the AEAD suites).
SUITE_PREFERENCE: tuple[str, ...] = (
    "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM",
)
#: Suites we recognise but cannot run (pylibsrtp has no profile for them).
KNOWN_UNSUPPORTED = frozenset({
    "AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32", "AES_192_CM_HMAC_SHA1_80",
    "AES_192_CM_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32_NULL",
    "NULL_HMAC_SHA1_80", "NULL_HMAC_SHA1_32",
})
#: RFC 4568 6.2.1: the SRTP maximum lifetime of an AES_CM master key is 2^48 packets.
MAX_LIFETIME = 2 ** 48
#: We never re-key within a call: a key that must be replaced sooner than 2^20 packets
#: (about 5.8 hours of 20 ms audio) is refused rather than overused.
MIN_LIFETIME = 2 ** 20

_TAG = re.compile(r"[0-9]{1,9}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class CryptoError(ValueError):
    """An ``a=crypto`` attribute we cannot use; ``reason`` says why in one line."""

    def __init__(self, reason: str, *, supported_shape: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        #: False when the attribute is malformed (a syntax error), True when it is well formed
        #: but asks for something this gateway does not do (suite, MKI, lifetime, parameter).
        self.supported_shape = supported_shape


@dataclass(frozen=True)
class CryptoAttribute:
    """One parsed ``a=crypto`` line (RFC 4568 section 9.1).

    ``key`` is the master key followed by the master salt, exactly as pylibsrtp's
    ``Policy(key=...)`` takes it.  ``lifetime`` is in packets (None: not given, i.e. the
    suite's maximum); ``mki``/``mki_length`` are None without an MKI (we refuse MKIs, but the
    values are kept so the refusal can say what was offered).
    """

    tag: int
    suite: str
    key: bytes
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None
    session_params: tuple[str, ...] = ()

    def to_sdp(self) -> str:
        """The attribute value (without ``a=crypto:``), e.g. ``1 AES_CM_128_HMAC_SHA1_80 inline:...``."""
        inline = "inline:" + base64.b64encode(self.key).decode()
        if self.lifetime is not None:
            inline += "|" + _lifetime_text(self.lifetime)
        if self.mki is not None:
            inline += f"|{self.mki}:{self.mki_length}"
        return " ".join([str(self.tag), self.suite, inline, *self.session_params])

    def __repr__(self) -> str:  # never print key material
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite!r}, key=<{len(self.key)} bytes>)"


def _lifetime_text(value: int) -> str:
    if value > 1 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return str(value)


def _parse_lifetime(text: str) -> int:
    if text.startswith("2^"):
        exp = text[2:]
        if not exp.isdigit() or len(exp) > 3:
            raise CryptoError(f"bad key lifetime {text!r}", supported_shape=False)
        return 2 ** int(exp)
    if not text.isdigit() or len(text) > 20:
        raise CryptoError(f"bad key lifetime {text!r}", supported_shape=False)
    return int(text)


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse the value of one ``a=crypto`` attribute; :class:`CryptoError` if unusable.

    Accepts exactly what :func:`~bridge`'s SRTP can run: a supported suite, one inline
    key of the suite's length, an optional lifetime between 2^20 and 2^48 packets, no MKI,
    and no session parameters except ``WSH=`` (a window-size hint, RFC 4568 6.3.7).
    """
    parts = value.split()
    if len(parts) < 3:
        raise CryptoError("a=crypto needs a tag, a suite and key parameters", supported_shape=False)
    tag_s, suite, key_params, *session = parts
    if not _TAG.fullmatch(tag_s):
        raise CryptoError(f"a=crypto tag {tag_s!r} is not a 1-9 digit number", supported_shape=False)
    if suite not in SUITE_KEY_LENGTHS:
        known = "known but not supported" if suite in KNOWN_UNSUPPORTED else "unknown"
        raise CryptoError(f"crypto suite {suite} is {known} (supported: {', '.join(SUITE_PREFERENCE)})")
    if ";" in key_params:
        raise CryptoError("several master keys in one a=crypto (RFC 4568 6.1) are not supported")
    method, colon, info = key_params.partition(":")
    if method != "inline" or not colon:
        raise CryptoError(f"key method {method!r} is not supported (only inline)", supported_shape=False)
    key_b64, *extras = info.split("|")
    if not _B64.fullmatch(key_b64):
        raise CryptoError("inline key is not base64", supported_shape=False)
    try:
        key = base64.b64decode(key_b64 + "=" * (-len(key_b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("inline key is not base64", supported_shape=False) from None
    key_len, salt_len = SUITE_KEY_LENGTHS[suite]
    if len(key) != key_len + salt_len:
        raise CryptoError(f"{suite} needs a {key_len + salt_len}-byte key||salt, the inline key "
                          f"has {len(key)} bytes", supported_shape=False)
    if len(extras) > 2:
        raise CryptoError("too many '|' fields after the inline key", supported_shape=False)
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None
    for extra in extras:
        if ":" in extra:  # MKI:length (RFC 4568 9.1 mki = mki-value ":" mki-length)
            if mki is not None:
                raise CryptoError("two MKI fields after the inline key", supported_shape=False)
            m_s, _, l_s = extra.partition(":")
            if not m_s.isdigit() or not l_s.isdigit() or not 1 <= int(l_s) <= 128:
                raise CryptoError(f"bad MKI {extra!r}", supported_shape=False)
            mki, mki_length = int(m_s), int(l_s)
        else:
            if lifetime is not None or mki is not None:
                raise CryptoError("the lifetime must come once, before the MKI", supported_shape=False)
            lifetime = _parse_lifetime(extra)
    if lifetime is not None and lifetime > MAX_LIFETIME:
        raise CryptoError(f"key lifetime {_lifetime_text(lifetime)} exceeds the SRTP maximum 2^48",
                          supported_shape=False)
    if lifetime is not None and lifetime < MIN_LIFETIME:
        raise CryptoError(f"key lifetime {_lifetime_text(lifetime)} packets is shorter than 2^20 "
                          "and re-keying is not supported")
    if mki is not None:
        raise CryptoError(f"MKI {mki}:{mki_length} is not supported (keys without MKI only)")
    for param in session:
        name = param.split("=", 1)[0]
        if name != "WSH":
            raise CryptoError(f"session parameter {param!r} is not supported")
    return CryptoAttribute(tag=int(tag_s), suite=suite, key=key, lifetime=lifetime, mki=mki,
                           mki_length=mki_length, session_params=tuple(session))


@dataclass(frozen=True)
class CryptoChoice:
    """What the answer says for SDES: the offer's attribute we accept, and our own key for it."""

    remote: CryptoAttribute
    local: CryptoAttribute

    @property
    def suite(self) -> str:
        return self.remote.suite


def choose_crypto(values: list[str]) -> tuple[CryptoChoice | None, list[str]]:
    """Pick one of an m-line's ``a=crypto`` values (RFC 4568 7.1.1) and make our key for it.

    Returns the choice (None when nothing is usable) and one reason per refused attribute,
    so a 488 can say why.  Among usable attributes the suite order is :data:`SUITE_PREFERENCE`,
    then the offer's order.
    """
    usable: list[CryptoAttribute] = []
    refused: list[str] = []
    for value in values:
        try:
            usable.append(parse_crypto(value))
        except CryptoError as exc:
            refused.append(f"a=crypto {value.split(' ', 1)[0]}: {exc.reason}")
    if not usable:
        return None, refused
    remote = min(usable, key=lambda c: SUITE_PREFERENCE.index(c.suite))
    return CryptoChoice(remote=remote, local=new_local_crypto(remote)), refused


def new_local_crypto(remote: CryptoAttribute) -> CryptoAttribute:
    """Our answer attribute: the offer's tag and suite with a fresh random key||salt
    (RFC 4568 6.1: each direction has its own master key; ``secrets`` is a CSPRNG)."""
    key_len, salt_len = SUITE_KEY_LENGTHS[remote.suite]
    return CryptoAttribute(tag=remote.tag, suite=remote.suite,
                           key=secrets.token_bytes(key_len + salt_len))
