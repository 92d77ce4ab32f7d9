"""Tracing with the OpenTelemetry SDK.

A tracer provider is always installed, so spans (and the trace ids in logs and API responses) exist;
spans leave the process only when an OTLP endpoint is configured through the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables. `OTEL_SDK_DISABLED=true`
turns tracing off entirely. Instrumentation of gRPC and asyncpg is installed before any server, channel
or pool exists, as the instrumentors patch classes.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from servicekit import settings

_configured = False


def enabled() -> bool:
    """False when `OTEL_SDK_DISABLED` is true."""
    return os.environ.get("OTEL_SDK_DISABLED", "").lower() not in ("true", "1")


def configure(service_name: str, config: settings.TelemetrySettings) -> None:
    """Install the tracer provider and the gRPC and asyncpg instrumentation, once per process."""
    global _configured
    if _configured or not enabled():
        return
    _configured = True
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name or service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument(sql_spans=config.sql_spans)


def _instrument(*, sql_spans: bool) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    if sql_spans:
        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


def shutdown() -> None:
    """Flush pending spans."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
