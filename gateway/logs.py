"""Structured logging: one structlog event per call step, console in development, JSON in production.

Event names are dotted and stable (``sip.invite.received``, ``call.admitted``,
``bridge.leg.up``): operators grep and alert on them, so they are part of the interface.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["console", "json"]


def configure_logging(fmt: LogFormat = "console", level: str = "info") -> None:
    """Route structlog (and stdlib logging, which aiortc/aioice use) to stderr in ``fmt``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging; keep them quiet unless debugging.
    logging.basicConfig(level=logging.WARNING if numeric > logging.DEBUG else logging.DEBUG,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
