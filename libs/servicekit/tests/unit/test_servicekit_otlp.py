"""The direct OTLP encoder writes what the stock encoder writes, for every span shape the SDK produces."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from servicekit.otlp import Encoder

_text = st.text(max_size=40)
_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=20),
)
_value = st.one_of(_scalar, st.tuples(_text, _text), st.tuples(st.integers(-5, 2**40), st.booleans()))
_attributes = st.dictionaries(_text, _value, max_size=5)
_ids = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def _context(draw: st.DrawFn, remote: bool | None = None) -> SpanContext:
    state = draw(st.sampled_from([TraceState(), TraceState([("vendor", "v1"), ("other", "x-2")])]))
    return SpanContext(
        draw(st.integers(min_value=1, max_value=2**128 - 1)),
        draw(_ids),
        draw(st.booleans()) if remote is None else remote,
        TraceFlags(1),
        state,
    )


@st.composite
def _span(draw: st.DrawFn, resources: list[Resource], scopes: list[InstrumentationScope | None]) -> ReadableSpan:
    start = draw(st.integers(min_value=0, max_value=2**63))
    status = draw(
        st.sampled_from([Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "it broke")])
    )
    return ReadableSpan(
        draw(_text),
        context=draw(_context(remote=False)),
        parent=draw(st.none() | _context()),
        resource=draw(st.sampled_from(resources)),
        attributes=draw(_attributes),
        events=draw(
            st.lists(st.builds(Event, _text, _attributes, st.integers(min_value=0, max_value=2**63)), max_size=2)
        ),
        links=draw(st.lists(st.builds(Link, _context(), _attributes), max_size=2)),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=start + draw(st.integers(min_value=0, max_value=10**9)),
        instrumentation_scope=draw(st.sampled_from(scopes)),
    )


_RESOURCES = [Resource.create({"service.name": "order"}), Resource.create({"service.name": "payment", "n": 3})]
_SCOPES = [InstrumentationScope("sagaline.servicekit"), InstrumentationScope("x", "1.2", "https://s", {"a": 1}), None]


def _parsed(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


@settings(max_examples=150, deadline=None)
@given(st.lists(_span(_RESOURCES, _SCOPES), min_size=1, max_size=8))
def test_the_encoding_parses_to_the_stock_encoders_message(spans: list[ReadableSpan]) -> None:
    encoder = Encoder()

    first, again = encoder.encode(spans), encoder.encode(spans)  # the second pass reads the caches

    assert _parsed(first) == encode_spans(spans)
    assert again == first


def test_an_sdk_span_with_a_remote_parent_encodes_like_the_stock_encoder() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    kept: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "inventory"}))
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("t")
    remote = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(7, 9, True, TraceFlags(1))))
    with tracer.start_as_current_span("server", context=remote, kind=SpanKind.SERVER) as span:
        span.set_attribute("rpc.system", "grpc")
        span.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("child") as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))

    assert _parsed(Encoder().encode(kept)) == encode_spans(kept)


def test_an_attribute_of_an_unknown_type_is_left_out_and_the_rest_is_sent() -> None:
    span = ReadableSpan(
        "s", context=SpanContext(1, 2, False, TraceFlags(1)), resource=_RESOURCES[0],
        attributes={"good": "yes", "bad": object()}, start_time=1, end_time=2,
    )  # fmt: skip

    request = _parsed(Encoder().encode([span]))

    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert [(a.key, a.value.string_value) for a in encoded.attributes] == [("good", "yes")]


def test_values_python_treats_as_equal_keep_their_own_types_across_spans() -> None:
    encoder = Encoder()
    context = SpanContext(1, 2, False, TraceFlags(1))
    spans = [
        ReadableSpan("s", context=context, resource=_RESOURCES[0], attributes={"v": value}, start_time=1, end_time=2)
        for value in (True, 1, 1.0, "1")
    ]

    encoded = [_parsed(encoder.encode([span])) for span in spans]

    values = [request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value for request in encoded]
    assert [v.WhichOneof("value") for v in values] == ["bool_value", "int_value", "double_value", "string_value"]
