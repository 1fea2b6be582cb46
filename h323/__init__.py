"""H.323 for the gateway (see docs/h323.md).

Without I/O: :mod:`h323.tpkt` (RFC 1006 framing), :mod:`h323.q931` (Q.931 messages and
information elements), :mod:`h323.h225` (H323-UserInformation), :mod:`h323.h245`
(MultimediaSystemControlMessage), :mod:`h323.ras` (RasMessage), :mod:`h323.errors` (typed
errors with a Q.931 cause hint), :mod:`h323.asn1` (pycrate, loaded lazily once),
:mod:`h323.h245_session` (H.245 procedures) and :mod:`h323.call` (the H.225.0 callee with Fast
Start, tunnelling and separate H.245).  :mod:`h323.transport` holds the thin Twisted transports.
This package imports only the standard library, pycrate, structlog and (transports only) twisted.
"""
