"""roomgate: the SIP/H.323 interop gateway for WebRTC meetings (the application layer)."""

__version__ = "0.1.0"
