"""Structured logs: one JSON object per line with level, event, service, context, trace ids, and no secrets."""

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from servicekit import logging as service_logging

Lines = Callable[[], list[dict[str, Any]]]
Configure = Callable[..., Lines]

LEAK = "hunter2"  # part of every secret value below; it must never reach the output
REDACTED = "***"


@pytest.fixture
def configure(capfd: pytest.CaptureFixture[str]) -> Iterator[Configure]:
    """Configure logging inside the test (so it writes to the captured stderr) and undo it afterwards."""
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    structlog.contextvars.clear_contextvars()

    def configure_and_read(level: str = "info", fmt: str = "json") -> Lines:
        service_logging.configure("sk-test", level=level, fmt=fmt)

        def lines() -> list[dict[str, Any]]:
            return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]

        return lines

    yield configure_and_read
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


def test_a_line_carries_level_event_service_timestamp_and_fields(configure: Configure) -> None:
    lines = configure()

    service_logging.get_logger("sk.test").info("step succeeded", step="reserve", attempt=2)

    [line] = lines()
    assert line["event"] == "step succeeded"
    assert line["level"] == "info"
    assert line["service"] == "sk-test"
    assert line["step"] == "reserve"
    assert line["attempt"] == 2
    assert line["timestamp"].endswith("Z")


def test_bound_context_variables_appear_on_every_line(configure: Configure) -> None:
    lines = configure()
    log = service_logging.get_logger("sk.test")

    structlog.contextvars.bind_contextvars(saga_id="saga-42")
    log.info("first")
    log.warning("second")

    assert [(line["event"], line["saga_id"]) for line in lines()] == [("first", "saga-42"), ("second", "saga-42")]


def test_clearing_context_keeps_the_service(configure: Configure) -> None:
    lines = configure()

    structlog.contextvars.bind_contextvars(saga_id="saga-42")
    structlog.contextvars.clear_contextvars()
    service_logging.get_logger("sk.test").info("after clear")

    [line] = lines()
    assert line["service"] == "sk-test"
    assert "saga_id" not in line


def test_lines_inside_a_span_carry_its_trace_and_span_ids(configure: Configure) -> None:
    lines = configure()
    log = service_logging.get_logger("sk.test")
    tracer = TracerProvider().get_tracer("sk.test")

    with tracer.start_as_current_span("step") as span:
        log.info("inside")
    log.info("outside")

    inside, outside = lines()
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert len(inside["trace_id"]) == 32
    assert "trace_id" not in outside
    assert "span_id" not in outside


def test_secret_looking_keys_are_redacted(configure: Configure, capfd: pytest.CaptureFixture[str]) -> None:
    configure()
    secrets = {
        "password": f"pw-{LEAK}",
        "Authorization": f"Bearer {LEAK}",
        "api_key": f"key-{LEAK}",
        "refresh_token": f"tok-{LEAK}",
        "client_secret": f"sec-{LEAK}",
        "database_dsn": f"postgresql://app:{LEAK}@db/app",
    }

    service_logging.get_logger("sk.test").info("connecting", user="alice", **secrets)

    output = capfd.readouterr().err
    assert LEAK not in output
    line = json.loads(output)
    assert {key: line[key] for key in secrets} == dict.fromkeys(secrets, REDACTED)
    assert line["user"] == "alice"


def test_standard_library_records_go_through_the_same_pipeline(
    configure: Configure, capfd: pytest.CaptureFixture[str]
) -> None:
    configure()
    structlog.contextvars.bind_contextvars(saga_id="saga-7")

    extra = {"token": f"tok-{LEAK}", "volume": "/data"}
    logging.getLogger("some.library").warning("disk %s", "full", extra=extra)

    output = capfd.readouterr().err
    assert LEAK not in output
    line = json.loads(output)
    assert line["event"] == "disk full"
    assert line["level"] == "warning"
    assert line["service"] == "sk-test"
    assert line["saga_id"] == "saga-7"
    assert line["volume"] == "/data"
    assert line["token"] == REDACTED


def test_lines_below_the_level_are_dropped(configure: Configure) -> None:
    lines = configure(level="warning")
    log = service_logging.get_logger("sk.test")

    log.debug("noise")
    log.info("more noise")
    log.error("signal")
    logging.getLogger("some.library").info("library noise")

    assert [line["event"] for line in lines()] == ["signal"]


def test_debug_level_shows_debug_lines(configure: Configure) -> None:
    lines = configure(level="debug")

    service_logging.get_logger("sk.test").debug("details", key="value")

    assert [line["event"] for line in lines()] == ["details"]


def test_exceptions_are_rendered_into_the_line(configure: Configure) -> None:
    lines = configure()

    try:
        raise RuntimeError("broken invariant")
    except RuntimeError:
        service_logging.get_logger("sk.test").exception("step crashed")

    [line] = lines()
    assert line["level"] == "error"
    assert "RuntimeError: broken invariant" in line["exception"]


def test_console_format_is_readable_and_still_redacted(configure: Configure, capfd: pytest.CaptureFixture[str]) -> None:
    configure(fmt="console")

    service_logging.get_logger("sk.test").info("step succeeded", step="reserve", **{"password": f"pw-{LEAK}"})

    output = capfd.readouterr().err
    assert "step succeeded" in output
    assert "step=reserve" in output
    assert LEAK not in output
    assert not output.lstrip().startswith("{")
