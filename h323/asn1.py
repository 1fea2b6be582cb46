"""The PER codec behind H.225.0, H.245 and RAS: pycrate's compiled ASN.1 modules, loaded once.

pycrate (``pycrate_asn1dir.H225``) compiles the H.225.0 module together with the H.245
(MULTIMEDIA-SYSTEM-CONTROL) and H.235 modules it imports.  Its objects are singletons that hold
the last value decoded or encoded, so every call here decodes, then copies the value out at
once (``get_val``); the codec is not thread-safe and is meant for one event loop.

H.225.0 (section 7.6 and annex 7A) and H.245 (annex A) use the BASIC-ALIGNED variant of PER
(X.691), i.e. ``from_aper``/``to_aper``.  Any library failure (including a RecursionError or an
IndexError on hostile input) becomes the caller's typed error.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import structlog

from h323.errors import Asn1Error

log = structlog.get_logger(__name__)


@functools.cache
def modules() -> SimpleNamespace:
    """The compiled ASN.1 types we use, imported on first use (once per process)."""
    from pycrate_asn1dir import H225

    from h323 import _pycrate_fix

    _pycrate_fix.apply()

    msgs = H225.H323_MESSAGES
    msc = H225.MULTIMEDIA_SYSTEM_CONTROL
    log.debug("h323.asn1.loaded")
    return SimpleNamespace(
        UserInformation=msgs.H323_UserInformation,
        RasMessage=msgs.RasMessage,
        MultimediaSystemControlMessage=msc.MultimediaSystemControlMessage,
        OpenLogicalChannel=msc.OpenLogicalChannel,
    )


def _reset_codec() -> None:
    # pycrate keeps a class-level stack of bit offsets for aligned PER; a failed decode leaves
    # entries behind, so drop them to keep hostile input from growing it.
    from pycrate_asn1rt.codecs import ASN1CodecPER

    ASN1CodecPER._off.clear()


def decode(type_name: str, data: bytes, error: type[Asn1Error] = Asn1Error) -> Any:
    """Decode exactly one aligned-PER value of ``type_name`` from ``data`` (trailing octets are
    an error), returning pycrate's plain value structure."""
    values, rest = decode_prefix(type_name, data, error)
    if rest:
        raise error(f"{len(rest)} octets after the {type_name} value")
    return values


def decode_prefix(type_name: str, data: bytes, error: type[Asn1Error] = Asn1Error) -> tuple[Any, bytes]:
    """Decode one aligned-PER value from the start of ``data``; return it and the rest."""
    from pycrate_core.charpy import Charpy

    obj = getattr(modules(), type_name)
    if not data:
        raise error(f"empty {type_name}")
    char = Charpy(bytes(data))
    try:
        obj.from_aper(char)
        value = obj.get_val()
    except Exception as exc:  # noqa: BLE001 - pycrate raises many kinds (CharpyErr, IndexError...)
        _reset_codec()
        raise error(f"cannot decode {type_name}: {type(exc).__name__}: {exc}") from None
    used = (char._cur + 7) // 8
    return value, bytes(data[used:])


def encode(type_name: str, value: Any, error: type[Asn1Error] = Asn1Error) -> bytes:
    """Encode a plain value structure of ``type_name`` in aligned PER."""
    obj = getattr(modules(), type_name)
    try:
        out = obj.to_aper(value)
    except Exception as exc:  # noqa: BLE001 - as above: any failure means an unusable value
        _reset_codec()
        raise error(f"cannot encode {type_name}: {type(exc).__name__}: {exc}") from None
    if out is None:
        raise error(f"cannot encode {type_name}: no value")
    return bytes(out)
