"""gRPC client channels with client-side timing, a client span per call, and sane keepalive defaults.

`channel` speaks mutual TLS when the caller's TLS settings hold certificates (see `servicekit.tls`) and
plaintext otherwise; the choice is the configuration's, never a fallback after a failed handshake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


class _TimingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        service, _, name = method.lstrip("/").rpartition("/")
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        with _tracer.start_as_current_span(
            f"{service}/{name}",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            metadata = telemetry.inject(list(client_call_details.metadata or ()))
            details = client_call_details._replace(metadata=grpc.aio.Metadata(*metadata))
            try:
                call = await continuation(details, request)
                await call
                code = await call.code()
                return call
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.GRPC_REQUEST_DURATION.labels("client", service, name, code.name).observe(elapsed)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))


def insecure_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to target (`host:port`) with timing on every unary call."""
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS, interceptors=[_TimingInterceptor()])


def channel(target: str, security: settings.ClientTlsSettings | None = None, service: str = "") -> grpc.aio.Channel:
    """A channel to target (`host:port`): mutual TLS when security holds certificates, else plaintext.

    With `security.server_name` set, the server's certificate must name it (after `{service}` is
    replaced by service) instead of the target's host.

    Raises:
        ConfigError: a certificate, key or CA file cannot be read.
    """
    if security is None or not security.enabled:
        return insecure_channel(target)
    options: list[tuple[str, str | int]] = [*_CHANNEL_OPTIONS]
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name.replace("{service}", service)))
    credentials = tls.channel_credentials(security)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=[_TimingInterceptor()])
