"""Telemetry in a fresh process: it installs the global tracer provider, so it must not run inside pytest."""

import asyncio
import json
import os
import sys

PROCESS = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from servicekit import logging, settings, telemetry

logging.configure("sk-tel")
telemetry.configure("sk-tel", settings.TelemetrySettings(service_name="sk-tel-traces"))
telemetry.configure("ignored", settings.TelemetrySettings(service_name="ignored"))
provider = trace.get_tracer_provider()
with trace.get_tracer("sk").start_as_current_span("step") as span:
    logging.get_logger("sk").info("in span", expected=format(span.get_span_context().trace_id, "032x"))
sdk = isinstance(provider, TracerProvider)
name = provider.resource.attributes["service.name"] if sdk else None
print(json.dumps({"sdk": sdk, "service_name": name}), flush=True)
telemetry.shutdown()
"""


async def _run(**env: str) -> tuple[dict[str, object], dict[str, object]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | env
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROCESS, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    [log_line] = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    return json.loads(out), log_line


async def test_configure_installs_a_provider_once_and_logs_carry_its_trace_ids() -> None:
    result, line = await _run()

    assert result == {"sdk": True, "service_name": "sk-tel-traces"}
    assert line["service"] == "sk-tel"
    assert line["trace_id"] == line["expected"]
    assert line["trace_id"] != "0" * 32


async def test_a_disabled_sdk_installs_no_provider_and_logs_carry_no_trace_ids() -> None:
    result, line = await _run(OTEL_SDK_DISABLED="true")

    assert result == {"sdk": False, "service_name": None}
    assert "trace_id" not in line
