"""A minimal OTLP/gRPC trace receiver: keeps the spans it is sent, for tests and the benchmark.

Not a collector: it answers every export with success and stores a flat view of each span.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span with its process's service.name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        """Store the spans of one export request."""
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "service": attributes.get("service.name"), "name": span.name,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "links": [link.trace_id.hex() for link in span.links],
                        "attributes": {a.key: a.value for a in span.attributes},
                    })  # fmt: skip
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of one trace."""
        return [s for s in self.spans if s["trace_id"] == trace_id]

    async def start(self) -> str:
        """Listen on a free loopback port; returns the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT."""
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.stop(0)
