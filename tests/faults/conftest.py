"""Fault tests reuse the end-to-end stack fixture and helpers."""

from tests.e2e.conftest import running_stack

__all__ = ["running_stack"]
