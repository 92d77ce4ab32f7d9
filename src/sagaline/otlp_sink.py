"""A minimal OTLP trace receiver (HTTP/protobuf and gRPC): keeps the spans it is sent, for tests and the benchmark.

Not a collector: it answers every export with success and stores a flat view of each span. `start`
returns the endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT` of the protocol asked for.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from servicekit import health, http_server


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span with its process's service.name, or with `keep=False` only counts them.

    Counting costs a protobuf parse (C) per export; keeping also builds a dict per span, which a
    benchmark's receiver should not spend CPU on while it shares the machine with what it measures.
    """

    def __init__(self, keep: bool = True) -> None:
        self.spans: list[dict[str, Any]] = []
        self.count = 0
        self._keep = keep
        self._server: grpc.aio.Server | None = None
        self._http: http_server.HttpServer | None = None
        self.port = 0

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        """Store the spans of one export request."""
        self.keep(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def keep(self, request: Any) -> None:
        """Flatten and keep every span of an ExportTraceServiceRequest (or only count them)."""
        if not self._keep:
            self.count += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            return
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
                    self.count += 1

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of one trace."""
        return [s for s in self.spans if s["trace_id"] == trace_id]

    async def start(self, protocol: str = "http/protobuf") -> str:
        """Listen on a free loopback port; returns the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT."""
        if protocol == "grpc":
            self._server = grpc.aio.server()
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
            self.port = self._server.add_insecure_port("127.0.0.1:0")
            await self._server.start()
        else:

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                await self._asgi(scope, receive, send)

            self._http = http_server.HttpServer(app, "127.0.0.1", 0)
            await self._http.start()
            self.port = self._http.port
        return f"http://127.0.0.1:{self.port}"

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await http_server.read_body(receive)
        if body is None:
            return  # the exporter went away mid-request: nobody to answer
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.keep(request)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        await health.respond(send, 200, answer, "application/x-protobuf")

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.stop(0)
        if self._http is not None:
            await self._http.stop()
