"""Structured logging: JSON lines (or a readable console rendering) with trace and saga context.

Every line carries `level`, `event`, `timestamp`, the process's `service`, and, inside a span, `trace_id`
and `span_id`. Context such as `saga_id` and `step` is bound with `structlog.contextvars`. Values under
keys that look secret (authorization, password, token, secret, api_key) are redacted before rendering.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace

_SECRET_KEYS = ("authorization", "password", "secret", "token", "api_key", "dsn")


def _add_trace_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)  # uvicorn's terminal-coloured duplicate of the message
    for key in event:
        if any(marker in key.lower() for marker in _SECRET_KEYS):
            event[key] = "***"
    return event


def _service_adder(service: str) -> Any:
    # A processor rather than a bound context variable: `clear_contextvars()` in a request or saga scope
    # must not strip it, and threads that do not inherit the main context (exporters, executors) still log it.
    def add_service(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return add_service


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the standard library's logging for this process (idempotent)."""
    numeric = logging.getLevelName(level.upper())
    # The console's tracebacks are plain: the default (rich, with every frame's local variables) can take
    # seconds to render deep in grpc or asyncio and would print whatever secrets those locals hold.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _service_adder(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            # `extra=` fields are added before the shared chain so that they are redacted too.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)
    for noisy in ("uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger; call as `log.info("step succeeded", saga_id=..., step=...)`."""
    return structlog.get_logger(name)
