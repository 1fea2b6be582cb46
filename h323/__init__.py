"""H.323 without I/O: TPKT, Q.931, H.225.0 call signalling and RAS, H.245 (see docs/h323.md).

Modules: :mod:`h323.tpkt` (RFC 1006 framing), :mod:`h323.q931` (Q.931 messages and
information elements), :mod:`h323.h225` (H323-UserInformation), :mod:`h323.h245`
(MultimediaSystemControlMessage), :mod:`h323.ras` (RasMessage), :mod:`h323.errors` (typed
errors with a Q.931 cause hint) and :mod:`h323.asn1` (pycrate, loaded lazily once).
This package imports only the standard library, pycrate and structlog.
"""
