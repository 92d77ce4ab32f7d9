"""Whether tracing is on is read from the standard OTEL_SDK_DISABLED variable."""

import pytest
from opentelemetry import trace

from servicekit import settings, telemetry


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("false", True), ("", True), ("true", False), ("TRUE", False), ("1", False)]
)
def test_tracing_is_enabled_unless_the_sdk_is_disabled(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    else:
        monkeypatch.setenv("OTEL_SDK_DISABLED", value)

    assert telemetry.enabled() is expected


def test_configure_installs_nothing_when_the_sdk_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    before = trace.get_tracer_provider()

    telemetry.configure("sk-test", settings.TelemetrySettings())

    assert trace.get_tracer_provider() is before
