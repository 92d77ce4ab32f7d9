"""gRPC client channels with client-side timing, a client span per call, and sane keepalive defaults.

`channel` speaks mutual TLS when the caller's TLS settings hold certificates (see `servicekit.tls`) and
plaintext otherwise; the choice is the configuration's, never a fallback after a failed handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import trace

from servicekit import metrics, settings, telemetry, tls

_tracer = trace.get_tracer("sagaline.servicekit.grpc")

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),  # retries belong to the caller, which knows the idempotency key
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


class _Outcome:
    """The status a call ended with, as the observed block learns it."""

    code = grpc.StatusCode.UNKNOWN


@contextlib.contextmanager
def _observed(service: str, name: str) -> Iterator[_Outcome]:
    """A client span and the `grpc_request_duration_seconds{role="client"}` sample around one call."""
    started = time.perf_counter()
    outcome = _Outcome()
    with _tracer.start_as_current_span(
        f"{service}/{name}",
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield outcome
        except grpc.aio.AioRpcError as exc:
            outcome.code = exc.code()
            raise
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.labelled(metrics.GRPC_REQUEST_DURATION, "client", service, name, outcome.code.name).observe(elapsed)
            span.set_attribute("rpc.grpc.status_code", outcome.code.value[0])
            if outcome.code is not grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.code.name))


async def unary(
    rpc: Callable[..., Any],
    request: Any,
    *,
    service: str,
    method: str,
    timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline, handed to grpc, not an asyncio timeout
    metadata: Sequence[tuple[str, str]] = (),
) -> Any:
    """Call a unary method of a channel made with `instrumented=False`, observed as the interceptor would.

    The same span, metric and trace propagation without the interceptor machinery (a task and call
    wrapper per call), for the orchestrator's hot path.
    """
    with _observed(service, method) as outcome:
        response = await rpc(request, timeout=timeout, wait_for_ready=False, metadata=telemetry.inject(list(metadata)))
        outcome.code = grpc.StatusCode.OK
        return response


class _TimingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        service, _, name = method.lstrip("/").rpartition("/")
        with _observed(service, name) as outcome:
            metadata = telemetry.inject(list(client_call_details.metadata or ()))
            details = client_call_details._replace(metadata=grpc.aio.Metadata(*metadata))
            call = await continuation(details, request)
            await call
            outcome.code = await call.code()
            return call


def _interceptors(instrumented: bool) -> list[Any]:
    return [_TimingInterceptor()] if instrumented else []


def insecure_channel(target: str, *, instrumented: bool = True) -> grpc.aio.Channel:
    """An insecure channel to target (`host:port`); `instrumented`: every unary call timed and traced."""
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS, interceptors=_interceptors(instrumented))


def channel(
    target: str, security: settings.ClientTlsSettings | None = None, service: str = "", *, instrumented: bool = True
) -> grpc.aio.Channel:
    """A channel to target (`host:port`): mutual TLS when security holds certificates, else plaintext.

    With `security.server_name` set, the server's certificate must name it (after `{service}` is
    replaced by service) instead of the target's host.

    Raises:
        ConfigError: a certificate, key or CA file cannot be read.
    """
    if security is None or not security.enabled:
        return insecure_channel(target, instrumented=instrumented)
    options: list[tuple[str, str | int]] = [*_CHANNEL_OPTIONS]
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name.replace("{service}", service)))
    credentials = tls.channel_credentials(security)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=_interceptors(instrumented))
