"""The embedded conference core: WHIP/WHEP endpoints, per-meeting audio mixing, the web page."""
