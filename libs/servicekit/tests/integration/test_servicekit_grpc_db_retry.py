"""A handler that hits a transient database error is run again within the caller's deadline.

A real grpc.aio server and servicekit's channel; the handlers raise the exceptions asyncpg raises
(constructed, since the server here has no database to lose).
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from servicekit import grpc_client, grpc_server

SERVICE = "sagaline.sktest.v1.Flaky"


def _files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def _identity(data: bytes) -> bytes:
    return data


class Flaky:
    """Fails the first `failures` calls of each method with the given error, then answers."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.failures = 0
        self.error: Exception = asyncpg.QueryCanceledError("canceling statement due to user request")

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls["x"] = self.calls.get("x", 0) + 1
        if self.calls["x"] <= self.failures:
            raise self.error
        return b"done:" + request


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, grpc.aio.UnaryUnaryMultiCallable]]:
    handler = Flaky()
    server = grpc_server.GrpcServer(host="127.0.0.1", port=0)
    server.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {"Do": grpc.unary_unary_rpc_method_handler(handler.handle, _identity, _identity)},
            ),
        )
    )
    port = await server.start()
    channel = grpc_client.insecure_channel(f"127.0.0.1:{port}")
    yield handler, channel.unary_unary(f"/{SERVICE}/Do", request_serializer=_identity, response_deserializer=_identity)
    await channel.close()
    await server.stop(0)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.QueryCanceledError("canceling statement"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.TooManyConnectionsError("too many connections"),
        ConnectionResetError("connection reset by peer"),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_transient_database_error_is_absorbed_within_the_call(
    flaky: tuple[Flaky, grpc.aio.UnaryUnaryMultiCallable], error: Exception
) -> None:
    handler, call = flaky
    handler.failures, handler.error = 3, error

    assert await call(b"k", timeout=5) == b"done:k"
    assert handler.calls["x"] == 4


async def test_a_database_out_for_the_whole_deadline_answers_unavailable(
    flaky: tuple[Flaky, grpc.aio.UnaryUnaryMultiCallable],
) -> None:
    handler, call = flaky
    handler.failures = 10_000

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"k", timeout=0.6)

    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 2 <= handler.calls["x"] < 20, "retried with backoff, not in a hot loop"


async def test_a_bug_is_not_retried(flaky: tuple[Flaky, grpc.aio.UnaryUnaryMultiCallable]) -> None:
    handler, call = flaky
    handler.failures, handler.error = 1, asyncpg.UndefinedColumnError('column "nope" does not exist')

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"k", timeout=5)

    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert handler.calls["x"] == 1


async def test_the_call_journal_records_each_call_with_its_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGALINE_CALL_JOURNAL", str(tmp_path))
    monkeypatch.setattr(grpc_server, "_journal", None)
    handler = Flaky()
    server = grpc_server.GrpcServer(host="127.0.0.1", port=0)
    server.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Do": grpc.unary_unary_rpc_method_handler(handler.handle)}),)
    )
    port = await server.start()
    try:
        async with grpc_client.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/Do")
            await call(b"k", timeout=5, metadata=(("sagaline-owner", "host:1:ab"), ("sagaline-fence", "3")))
    finally:
        await server.stop(0)
        monkeypatch.setattr(grpc_server, "_journal", None)

    [line] = [json.loads(row) for path in _files(tmp_path) for row in path.read_text().splitlines()]
    assert (line["service"], line["method"], line["owner"], line["fence"]) == (SERVICE, "Do", "host:1:ab", 3)
