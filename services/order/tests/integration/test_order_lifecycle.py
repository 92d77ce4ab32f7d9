"""Starting, draining and stopping the order service, in process and as `python -m order_service`."""

import asyncio
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from order_service import bootstrap, config
from sagaline_contracts.order.v1 import order_pb2


async def _until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def _blocked_on_a_lock(db: asyncpg.Connection) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def test_graceful_stop_lets_an_in_flight_create_finish(service: Any) -> None:
    blocker = await asyncpg.connect(service.url)
    holding = blocker.transaction()
    await holding.start()
    # Inserts into orders wait for this lock: the CreateOrder below is in flight until it is released.
    await blocker.execute("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")
    request = service.requests.create()
    in_flight = asyncio.ensure_future(service.stub.CreateOrder(request))
    await _until(lambda: _blocked_on_a_lock(service.db))

    stopping = asyncio.ensure_future(service.running.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done(), "stop returned while a call was still in flight"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.running.http_port}") as client:
        assert (await client.get("/readyz")).status_code == 503
    await holding.rollback()
    await blocker.close()

    response = await in_flight
    await stopping
    assert response.order.status == order_pb2.ORDER_STATUS_CREATED
    row = await service.db.fetchrow("SELECT status FROM orders WHERE idempotency_key = $1", request.idempotency_key)
    assert row is not None
    assert row["status"] == "CREATED"


async def test_serve_runs_until_the_stop_event(database: str) -> None:
    stop = asyncio.Event()
    settings = config.Settings(
        database={"url": database}, grpc_port=0, http_port=0, http_host="127.0.0.1", grpc_host="127.0.0.1"
    )
    serving = asyncio.ensure_future(bootstrap.serve(settings, stop))
    await asyncio.sleep(0.2)
    assert not serving.done()
    stop.set()
    assert await serving == 0


async def test_migrate_is_idempotent_and_seed_has_nothing_to_add(database: str) -> None:
    assert await bootstrap.migrate(database) == []
    assert await bootstrap.seed(database) == []


def test_a_bad_configuration_exits_with_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAGALINE_ORDER_GRPC_PORT", "not-a-port")
    assert bootstrap.main() == 2
    assert "grpc_port" in capsys.readouterr().err


async def _started(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stderr is not None
    while line := await asyncio.wait_for(process.stderr.readline(), timeout=20):
        event = json.loads(line)
        if event.get("event") == "order service started":
            return dict(event)
    raise AssertionError("the service exited before it started")


async def test_the_process_serves_and_exits_0_on_sigterm(database: str) -> None:
    env = os.environ | {
        "SAGALINE_ORDER_DATABASE__URL": database,
        "SAGALINE_ORDER_GRPC_PORT": "0",
        "SAGALINE_ORDER_HTTP_PORT": "0",
        "SAGALINE_ORDER_GRPC_HOST": "127.0.0.1",
        "SAGALINE_ORDER_HTTP_HOST": "127.0.0.1",
        "OTEL_SDK_DISABLED": "true",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "order_service", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        started = await _started(process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{started['grpc_port']}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_port_in_use_fails_start_and_leaves_no_connection_open(database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = config.Settings(
            database={"url": database},
            grpc_port=0,
            http_port=taken.getsockname()[1],
            http_host="127.0.0.1",
            grpc_host="127.0.0.1",
        )
        with pytest.raises(OSError, match=r"failed to start|address already in use"):
            await bootstrap.start(settings)
    db = await asyncpg.connect(database)

    async def nobody_else_connected() -> bool:
        others = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return bool(others == 0)

    try:
        # A closed connection's server process exits a moment after the client has gone.
        await _until(nobody_else_connected, within=5)
    finally:
        await db.close()
