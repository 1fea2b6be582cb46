"""Shared fixtures. ``gateway_factory`` runs the real gateway (tests/support/gateway_process.py)."""

from tests.support.gateway_process import gateway_factory  # noqa: F401 - registers the fixture
