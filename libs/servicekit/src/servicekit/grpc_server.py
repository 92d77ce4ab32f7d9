"""gRPC server bootstrap: health, reflection, an observing interceptor, and a graceful stop.

The interceptor opens a server span per call (continuing the caller's `traceparent`), times every unary
call into `grpc_request_duration_seconds` (cancelled and timed-out ones included), logs calls that end
in an error, and turns an unhandled exception into `INTERNAL` with its stack in the log (never a dead
process).

A handler that fails on a transient database error (`db.transient`: unreachable, cancelled, terminated,
deadlocked, too many connections) is run again with jittered backoff within the caller's deadline, then
answered `UNAVAILABLE` if the deadline runs out first: a database blip costs the call its duration, not
the saga its retries. Running a handler again is safe because every mutating RPC of a Sagaline service
is keyed (SPEC section 7): a repeat after an unknown commit finds the stored answer.

With `SAGALINE_CALL_JOURNAL` set to a directory, every call received is appended as one JSON line
(service, method, saga, the caller's owner id and fence from the metadata, receive time) to a file per
process: fault tests count the calls that reached a participant from an owner that had lost its lease.
Off (and free) otherwise. Services translate their own domain errors into status codes in their gRPC adapter; anything
that reaches this interceptor unhandled is a bug. `stop` flips the health status to NOT_SERVING before
it stops accepting calls, then lets in-flight calls finish within the grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from servicekit import db, logging, metrics, settings, telemetry, tls

log = logging.get_logger(__name__)
_tracer = trace.get_tracer("sagaline.servicekit.grpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        # Services are registered before the server starts and never change: each method's observed
        # handler is built on its first call and reused, instead of a new wrapper per call.
        self._observed: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        known = self._observed.get(handler_call_details.method)
        if known is not None:
            return known
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        observed = grpc.unary_unary_rpc_method_handler(
            _observed(handler.unary_unary, service, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._observed[handler_call_details.method] = observed
        return observed


_RETRY_FIRST, _RETRY_MAX, _RETRY_BUDGET = 0.05, 1.0, 10.0


async def _retrying(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
    """Run the handler, again after a transient database error, while the caller's deadline allows."""
    delay, started = _RETRY_FIRST, time.monotonic()
    while True:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if not db.transient(exc):
                raise
            remaining = context.time_remaining()
            budget = _RETRY_BUDGET - (time.monotonic() - started) if remaining is None else remaining
            if budget < 2 * delay:
                log.warning("database unavailable for the whole call", error=repr(exc))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {type(exc).__name__}")
            log.debug("transient database error, running the handler again", error=repr(exc))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not security
            delay = min(delay * 2, _RETRY_MAX)


class _Journal:
    """One JSON line per call received, for fault tests (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._path = os.path.join(directory, f"calls-{os.getpid()}.jsonl")

    def record(self, service: str, method: str, request: Any, metadata: Any) -> None:
        caller = {k: v for k, v in (metadata or ()) if k in ("sagaline-owner", "sagaline-fence")}
        line = {
            "service": service,
            "method": method,
            "saga_id": str(getattr(request, "saga_id", "")),
            "owner": caller.get("sagaline-owner", ""),
            "fence": int(caller.get("sagaline-fence", "0") or 0),
            "at": time.time(),
        }
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


_journal: _Journal | None = None


def _observed(behavior: Behavior, service: str, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if _journal is not None:
            _journal.record(service, method, request, context.invocation_metadata())
        with _tracer.start_as_current_span(
            f"{service}/{method}",
            context=telemetry.extract(context.invocation_metadata()),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await timed(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            response = await _retrying(behavior, request, context)
        except asyncio.CancelledError:
            # The client gave up or the server is stopping: these calls, often the slowest, are timed too.
            _record(service, method, _cancelled_code(context), started)
            raise
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            _record(service, method, code, started)
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                log.warning("grpc call failed", method=method, code=code.name, details=context.details())
            raise
        except Exception:
            log.exception("unhandled error in grpc handler", method=method)
            _record(service, method, grpc.StatusCode.INTERNAL, started)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        _record(service, method, context.code() or grpc.StatusCode.OK, started)
        return response

    return wrapper


def _cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _record(service: str, method: str, code: grpc.StatusCode, started: float) -> None:
    elapsed = time.perf_counter() - started
    metrics.labelled(metrics.GRPC_REQUEST_DURATION, "server", service, method, code.name).observe(elapsed)


class GrpcServer:
    """A grpc.aio server with the standard health service, optional reflection, and optional mutual TLS.

    With TLS settings that hold certificates the port speaks only mutual TLS: a caller without a client
    certificate signed by the configured CA fails the handshake and never reaches a handler. Without,
    the port is plaintext, and binding it to anything but loopback logs a warning at start. Reflection
    lets anyone who can connect list every service, method and message: off unless asked for.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",  # noqa: S104
        port: int = 0,
        interceptors: Iterable[Any] = (),
        *,
        tls: settings.TlsSettings | None = None,
        reflection: bool = True,
    ) -> None:
        """Create the server; `port=0` picks a free port, readable from `port` after `start`.

        `reflection` defaults to on for callers of this class (tests, tools); services pass their own
        setting, which is off by default. TLS files are read by `start`, so a missing file fails there.
        """
        global _journal
        if (directory := os.environ.get("SAGALINE_CALL_JOURNAL")) and _journal is None:
            _journal = _Journal(directory)
        self._server = grpc.aio.server(interceptors=[_ObservingInterceptor(), *interceptors])
        self._health = health_aio.HealthServicer()
        self._services: list[str] = []
        self._host = host
        self._address = f"{host}:{port}"
        self._tls = tls if tls is not None and tls.enabled else None
        self._reflection = reflection
        self.port = port
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    @property
    def server(self) -> grpc.aio.Server:
        """The underlying server, to register servicers on."""
        return self._server

    def add_service_name(self, full_name: str) -> None:
        """Declare a registered service, for health checks and reflection."""
        self._services.append(full_name)

    async def start(self) -> int:
        """Bind, start, and report every declared service as SERVING; returns the bound port.

        Raises:
            ConfigError: a TLS certificate, key or CA file cannot be read.
        """
        if self._reflection:
            health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
            reflection.enable_server_reflection([*self._services, health, reflection.SERVICE_NAME], self._server)
        if self._tls is not None:
            self.port = self._server.add_secure_port(self._address, tls.server_credentials(self._tls))
        else:
            self.port = self._server.add_insecure_port(self._address)
        await self._server.start()
        for name in ["", *self._services]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        security = "mutual TLS" if self._tls is not None else "plaintext"
        log.info(
            "grpc listening", address=self._address, port=self.port, security=security, reflection=self._reflection
        )
        if self._tls is None and not tls.is_loopback(self._host):
            log.warning(
                "GRPC IS PLAINTEXT ON A NON-LOOPBACK INTERFACE: anyone who can reach this port can call every "
                "method unauthenticated; configure tls.cert_file, tls.key_file and tls.ca_file",
                address=self._address,
            )
        return self.port

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, then stop accepting calls and let in-flight ones finish within grace seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
