"""A real grpc.aio server on an ephemeral port, called through servicekit's channel.

The service under test is registered with a generic handler and identity serializers, so no protos are needed.
"""

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from servicekit import grpc_client, grpc_server

SERVICE = "sagaline.sktest.v1.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Call = Callable[..., Awaitable[bytes]]


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class Echo:
    """Handlers covering the outcomes the interceptor distinguishes."""

    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    slow_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def ok(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"echo:" + request

    async def boom(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("secret internal detail")

    async def not_found(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returned")

    async def give_up(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.INTERNAL, "store unavailable")
        raise AssertionError("abort returned")

    async def conflict(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        context.set_details("already there")
        return b""

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.slow_started.set()
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return b"finished"

    def handler(self) -> grpc.GenericRpcHandler:
        behaviours = {
            "Ok": self.ok,
            "Boom": self.boom,
            "NotFound": self.not_found,
            "GiveUp": self.give_up,
            "Conflict": self.conflict,
            "Slow": self.slow,
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    behaviour, request_deserializer=_identity, response_serializer=_identity
                )
                for name, behaviour in behaviours.items()
            },
        )


@dataclass
class Running:
    server: grpc_server.GrpcServer
    echo: Echo
    channel: grpc.aio.Channel

    def method(self, name: str) -> Call:
        call: Call = self.channel.unary_unary(
            f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity
        )
        return call


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    echo = Echo()
    server = grpc_server.GrpcServer(host="127.0.0.1", port=0)
    server.server.add_generic_rpc_handlers((echo.handler(),))
    server.add_service_name(SERVICE)
    port = await server.start()
    channel = grpc_client.insecure_channel(f"127.0.0.1:{port}")
    yield Running(server, echo, channel)
    await channel.close()
    await server.stop(0)


def _count(role: str, method: str, code: str) -> float:
    labels = {"role": role, "service": SERVICE, "method": method, "code": code}
    return REGISTRY.get_sample_value("grpc_request_duration_seconds_count", labels) or 0.0


async def _outcome(call: Awaitable[bytes]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


async def _eventually(predicate: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_start_binds_an_ephemeral_port_and_serves(running: Running) -> None:
    assert running.server.port > 0

    assert await running.method("Ok")(b"hi", timeout=5) == b"echo:hi"


@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_reports_serving_for_the_server_and_declared_services(running: Running, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(running.channel)

    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == SERVING


async def test_health_does_not_know_undeclared_services(running: Running) -> None:
    stub = health_pb2_grpc.HealthStub(running.channel)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="sagaline.other.v1.Nope"), timeout=5)

    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_declared_health_and_reflection_services(running: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)

    responses = [response async for response in call]

    names = {service.name for service in responses[0].list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def test_an_unexpected_exception_becomes_internal_without_leaking_details(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.method("Boom")(b"", timeout=5)

    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error"
    assert "secret" not in str(info.value)


async def test_the_server_keeps_serving_after_a_handler_crashes(running: Running) -> None:
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await running.method("Boom")(b"", timeout=5)

    assert await running.method("Ok")(b"still here", timeout=5) == b"echo:still here"


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("Ok", "OK"),
        ("Boom", "INTERNAL"),
        ("NotFound", "NOT_FOUND"),
        ("GiveUp", "INTERNAL"),
        ("Conflict", "ALREADY_EXISTS"),
    ],
)
async def test_calls_are_timed_on_both_sides_with_their_status_code(running: Running, method: str, code: str) -> None:
    server_before, client_before = _count("server", method, code), _count("client", method, code)

    assert await _outcome(running.method(method)(b"x", timeout=5)) == code

    assert _count("client", method, code) - client_before == 1
    # `abort` sends the status before it raises, so the client may see it before the server records it.
    await _eventually(lambda: _count("server", method, code) - server_before == 1)


async def test_a_call_past_its_deadline_is_timed_on_both_sides(running: Running) -> None:
    server_before = _count("server", "Slow", "DEADLINE_EXCEEDED")
    client_before = _count("client", "Slow", "DEADLINE_EXCEEDED")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.method("Slow")(b"", timeout=0.05)

    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _count("client", "Slow", "DEADLINE_EXCEEDED") - client_before == 1
    await asyncio.wait_for(running.echo.slow_cancelled.wait(), timeout=2)
    await _eventually(lambda: _count("server", "Slow", "DEADLINE_EXCEEDED") - server_before == 1)


async def test_a_call_cancelled_by_the_caller_is_timed_as_cancelled(running: Running) -> None:
    before = _count("client", "Slow", "CANCELLED")
    call = asyncio.ensure_future(running.method("Slow")(b"", timeout=5))
    await asyncio.wait_for(running.echo.slow_started.wait(), timeout=5)

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert _count("client", "Slow", "CANCELLED") - before == 1


async def test_an_unreachable_server_is_timed_as_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = _count("client", "Ok", "UNAVAILABLE")

    async with grpc_client.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(f"/{SERVICE}/Ok", request_serializer=_identity, response_deserializer=_identity)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await method(b"", timeout=5)

    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _count("client", "Ok", "UNAVAILABLE") - before == 1


async def test_stop_reports_not_serving_then_lets_in_flight_calls_finish(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    watches = {name: health.Watch(health_pb2.HealthCheckRequest(service=name)) for name in ("", SERVICE)}
    for watch in watches.values():
        assert (await asyncio.wait_for(watch.read(), timeout=5)).status == SERVING
    in_flight = asyncio.ensure_future(running.method("Slow")(b"", timeout=5))
    await asyncio.wait_for(running.echo.slow_started.wait(), timeout=5)

    started = time.monotonic()
    stopping = asyncio.ensure_future(running.server.stop(grace=5))

    for watch in watches.values():
        assert (await asyncio.wait_for(watch.read(), timeout=5)).status == NOT_SERVING
        watch.cancel()
    assert await in_flight == b"finished"
    await asyncio.wait_for(stopping, timeout=5)
    assert time.monotonic() - started < 2, "stop waited for the whole grace period"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.method("Ok")(b"", timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_cancels_calls_that_outlast_the_grace_period(running: Running) -> None:
    before = _count("server", "Slow", "CANCELLED")
    in_flight = asyncio.ensure_future(running.method("Slow")(b"", timeout=5))
    await asyncio.wait_for(running.echo.slow_started.wait(), timeout=5)

    await running.server.stop(grace=0.05)

    with pytest.raises(grpc.aio.AioRpcError):
        await in_flight
    assert running.echo.slow_cancelled.is_set()
    await _eventually(lambda: _count("server", "Slow", "CANCELLED") - before == 1)


async def test_extra_interceptors_see_every_call() -> None:
    seen: list[str] = []

    class Recorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(
            self, continuation: Callable[..., Awaitable[grpc.RpcMethodHandler]], details: grpc.HandlerCallDetails
        ) -> grpc.RpcMethodHandler:
            seen.append(details.method)
            return await continuation(details)

    echo = Echo()
    server = grpc_server.GrpcServer(host="127.0.0.1", interceptors=[Recorder()])
    server.server.add_generic_rpc_handlers((echo.handler(),))
    port = await server.start()
    try:
        async with grpc_client.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(
                f"/{SERVICE}/Ok", request_serializer=_identity, response_deserializer=_identity
            )
            assert await method(b"a", timeout=5) == b"echo:a"
    finally:
        await server.stop(0)

    assert seen == [f"/{SERVICE}/Ok"]


@pytest.mark.parametrize(("name", "code"), [("Ok", "OK"), ("Boom", "INTERNAL"), ("Conflict", "ALREADY_EXISTS")])
async def test_unary_on_an_uninstrumented_channel_is_observed_once_like_an_intercepted_call(
    running: Running, name: str, code: str
) -> None:
    async with grpc_client.insecure_channel(f"127.0.0.1:{running.server.port}", instrumented=False) as plain:
        rpc = plain.unary_unary(f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity)
        before = _count("client", name, code)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await grpc_client.unary(rpc, b"hi", service=SERVICE, method=name, timeout=5)
        assert _count("client", name, code) - before == 1
        # Without `unary`, the plain channel observes nothing: the hot path is not counted twice.
        with contextlib.suppress(grpc.aio.AioRpcError):
            await rpc(b"hi", timeout=5)
        assert _count("client", name, code) - before == 1
