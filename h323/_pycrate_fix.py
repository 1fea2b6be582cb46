"""A fix for pycrate's aligned-PER encoder of SEQUENCE/SET extension additions (pycrate 0.8.1).

X.691 section 19.7-19.9: after the root components come the extension-additions bitmap and
then each present addition as an open type (octet-aligned, length-prefixed).  pycrate's
``_CONSTRUCT._to_per`` encodes the open types *before* it accounts for the bitmap, so when
the root ends off an octet boundary (e.g. an ARQ ending in the BOOLEAN ``answerCall``) it
inserts stray padding bits in front of the first open type: pycrate cannot decode the result,
and Wireshark reports it malformed.  We recompile that one method with the offset bookkeeping
corrected: the open types are encoded as if they started aligned (they do, right after the
realigned bitmap), and their length is added after the bitmap.  Applied once, at the first
use of the codec; if pycrate's source no longer has the anchors, nothing is changed (and the
RAS round-trip tests say whether a fix is still needed).
"""

from __future__ import annotations

import inspect
import textwrap

import structlog

log = structlog.get_logger(__name__)

_A = "            _gen_ext, Bm, cnt = [], [], 1\n"
_A_NEW = (_A + "            _fix_off0 = ASN1CodecPER._off[-1] if ASN1CodecPER.ALIGNED else 0\n"
          "            if ASN1CodecPER.ALIGNED:\n"
          "                ASN1CodecPER._off[-1] = 0\n")
_B = "            if not Bm:\n                return GEN\n"
_B_NEW = ("            if ASN1CodecPER.ALIGNED:\n"
          "                _fix_ext_bits = ASN1CodecPER._off[-1]\n"
          "                ASN1CodecPER._off[-1] = _fix_off0\n"
          "            else:\n"
          "                _fix_ext_bits = 0\n" + _B)
_C = "            # finally concat with all encoded extensions\n"
_C_NEW = ("            if ASN1CodecPER.ALIGNED:\n"
          "                ASN1CodecPER._off[-1] += _fix_ext_bits\n" + _C)

_applied = False


def apply() -> bool:
    """Patch ``_CONSTRUCT._to_per``; True when the fix is in place."""
    global _applied
    if _applied:
        return True
    from pycrate_asn1rt import asnobj_construct as mod

    src = textwrap.dedent(inspect.getsource(mod._CONSTRUCT._to_per))
    src = textwrap.indent(src, "    ")
    if not all(a in src for a in (_A, _B, _C)):
        log.warning("h323.asn1.pycrate_fix_not_applied")
        return False
    src = src.replace(_A, _A_NEW).replace(_B, _B_NEW).replace(_C, _C_NEW)
    ns: dict[str, object] = {}
    exec(compile("if True:\n" + src, "<h323 pycrate fix>", "exec"), vars(mod), ns)  # noqa: S102
    mod._CONSTRUCT._to_per = ns["_to_per"]
    _applied = True
    return True
