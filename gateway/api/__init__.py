"""The control API (HTTPS, bearer tokens) and the metrics listener.

``gateway.api.tokens`` is import-light (hashlib only) so configuration checks and
``roomgate token new`` never pull in Twisted; ``gateway.api.http`` holds the
twisted.web resources and ``gateway.api.service`` the operations they call.
"""
