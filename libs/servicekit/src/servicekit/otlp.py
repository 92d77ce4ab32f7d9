"""OTLP span export with a direct protobuf encoder.

The stock OTLP exporter builds a protobuf message object per span, attribute and value before it
serializes them: about 60 µs of Python per span, paid on a background thread that holds the GIL while
the event loop waits for it. This module writes the same `ExportTraceServiceRequest` bytes straight
from the SDK's spans (field numbers from opentelemetry/proto/trace/v1/trace.proto), and caches what
repeats between spans of one process: the resource, the instrumentation scopes and the attribute
key/value pairs (the same SQL text, the same service names). The HTTP side (endpoint, headers,
timeout, compression, retries with backoff) stays the stock exporter's.

Tests parse the output with the generated protobuf classes and compare it with the stock encoder's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind

_log = logging.getLogger(__name__)

_PACK_FIXED64 = struct.Struct("<Q").pack
_PACK_FIXED32 = struct.Struct("<I").pack
_PACK_DOUBLE = struct.Struct("<d").pack
_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's remoteness is known / is remote
_CACHE_LIMIT = 4096  # attribute pairs remembered per process; cleared when full
_RESOURCE_LIMIT = 16


_SMALL = [bytes((i,)) for i in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages); every field number used here is below 16."""
    size = len(payload)
    return _SMALL[number << 3 | 2] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode()) if value else b""


def _any_value(value: Any) -> bytes:
    """An AnyValue message; the SDK only lets through the types handled here."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise TypeError(f"integer {value} does not fit an int64")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _PACK_DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _text(1, key) + _field(2, _any_value(value))


class Encoder:
    """Encodes batches of finished spans; one per exporter, used by its single export thread."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ExportTraceServiceRequest for these spans."""
        grouped: dict[int, dict[InstrumentationScope | None, list[bytes]]] = {}
        for span in spans:
            resource_key = self._resource_key(span.resource)
            by_scope = grouped.setdefault(resource_key, {})
            by_scope.setdefault(span.instrumentation_scope or None, []).append(_field(2, self._span(span)))
        request = bytearray()
        for resource_key, by_scope in grouped.items():
            resource, resource_bytes = self._resources[resource_key]
            body = bytearray(resource_bytes)
            for scope, encoded in by_scope.items():
                scope_body = self._scope(scope) + b"".join(encoded)
                if scope is not None and scope.schema_url:
                    scope_body += _text(3, scope.schema_url)
                body += _field(2, scope_body)
            body += _text(3, resource.schema_url)
            request += _field(1, bytes(body))
        return bytes(request)

    def _resource_key(self, resource: Resource) -> int:
        key = id(resource)
        cached = self._resources.get(key)
        if cached is None or cached[0] is not resource:
            if len(self._resources) >= _RESOURCE_LIMIT:  # a process has one; spans built by hand may not
                self._resources.clear()
            attributes = b"".join(_field(1, _key_value(k, v)) for k, v in resource.attributes.items())
            self._resources[key] = (resource, _field(1, attributes))
        return key

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        cached = self._scopes.get(scope)
        if cached is None:
            body = b""
            if scope is not None:
                body = _text(1, scope.name) + _text(2, scope.version or "")
                body += b"".join(_field(3, _key_value(k, v)) for k, v in (scope.attributes or {}).items())
            cached = self._scopes[scope] = _field(1, body)
        return cached

    def _span_attributes(self, attributes: Mapping[str, Any] | None) -> bytes:
        """Span attributes (field 9); a pair with a string value is encoded once per process while it repeats.

        Only strings are cached: Python treats `True`, `1` and `1.0` as the same dict key, so caching other
        types could send one as another.
        """
        if not attributes:
            return b""
        out = []
        pairs = self._pairs
        for key, value in attributes.items():
            cached = pairs.get((key, value)) if type(value) is str else None
            if cached is None:
                try:
                    cached = _field(9, _key_value(key, value))
                except TypeError as error:
                    _log.warning("attribute %s not exported: %s", key, error)
                    continue
                if type(value) is str:
                    if len(pairs) >= _CACHE_LIMIT:
                        pairs.clear()
                    pairs[(key, value)] = cached
            out.append(cached)
        return b"".join(out)

    def _plain_attributes(self, number: int, attributes: Mapping[str, Any] | None) -> bytes:
        return b"".join(_field(number, _key_value(k, v)) for k, v in (attributes or {}).items())

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.context
        if context is None:  # never for a finished SDK span; without ids there is nothing to send
            raise TypeError(f"span {span.name!r} has no context")
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            parts.append(_text(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
        if span.parent is not None:
            parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
        parts.append(_text(5, span.name))
        parts.append(b"\x30" + _varint(_KIND[span.kind]))
        parts.append(b"\x39" + _PACK_FIXED64(span.start_time or 0))
        parts.append(b"\x41" + _PACK_FIXED64(span.end_time or 0))
        parts.append(self._span_attributes(span.attributes))
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        parts.extend(_field(11, self._event(event)) for event in span.events)
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        parts.extend(_field(13, self._link(link)) for link in span.links)
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        status_body = _text(2, status.description or "")
        if status.status_code.value:
            status_body += b"\x18" + _varint(status.status_code.value)
        parts.append(_field(15, status_body))
        parts.append(b"\x85\x01" + _PACK_FIXED32(_flags(span.parent)))
        return b"".join(parts)

    def _event(self, event: Event) -> bytes:
        body = b"\x09" + _PACK_FIXED64(event.timestamp) + _text(2, event.name)
        body += self._plain_attributes(3, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        return body

    def _link(self, link: Link) -> bytes:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += self._plain_attributes(4, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        return body + b"\x35" + _PACK_FIXED32(_flags(link.context))


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


class HttpSpanExporter(OTLPSpanExporter):
    """The stock OTLP/HTTP exporter (configured by the standard `OTEL_*` variables) with this encoder."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = Encoder()
        # The transport is the stock exporter's internal client (opentelemetry-exporter-otlp-proto-http
        # 1.45, pinned in pyproject); should a release move it, the stock export path is used unchanged.
        self._direct = hasattr(self, "_client") and hasattr(self._client, "export")
        if not self._direct:
            _log.warning("OTLP exporter internals changed: spans are encoded by the stock encoder")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and send one batch; a failure is logged by the transport and reported to the SDK."""
        if not self._direct:
            return super().export(spans)
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            data = self._encoder.encode(spans)
        except Exception:  # a span the encoder cannot write must not kill the export thread
            _log.exception("span batch not encoded")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._client.export(data).success else SpanExportResult.FAILURE
