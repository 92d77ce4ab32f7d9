"""Dependencies fail under load: a participant dies and comes back, the database drops every connection.

Every saga still ends (completed or compensated), and the invariants hold when read from the databases.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from sagaline import check, pg, stack
from tests.e2e.conftest import ALICE, order, running_stack

SHORT_BREAKER = {"SAGALINE_BREAKER__OPEN_FOR": "1s"}


@pytest.fixture
async def system(pg_server: str) -> AsyncIterator[stack.Supervisor]:
    async for supervisor in running_stack(pg_server, SHORT_BREAKER):
        yield supervisor


async def post_many(system: stack.Supervisor, count: int, pause: float) -> list[str]:
    ids: list[str] = []
    clients = [httpx.AsyncClient(base_url=system.topology.orchestrator_url(i), timeout=10) for i in range(2)]
    try:
        for i in range(count):
            response = await clients[i % 2].post(
                "/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            if response.status_code == 202:
                ids.append(response.json()["id"])
            else:
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert "retry-after" in response.headers
            await asyncio.sleep(pause)
    finally:
        for client in clients:
            await client.aclose()
    return ids


async def statuses(system: stack.Supervisor, ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(system.topology.url("saga_orchestrator"))
    try:
        rows = await conn.fetch("SELECT id, status FROM sagas WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids])
    finally:
        await conn.close()
    return {str(r["id"]): r["status"] for r in rows}


async def wait_all_terminal(system: stack.Supervisor, ids: list[str], within: float) -> dict[str, str]:
    async with asyncio.timeout(within):
        while True:
            found = await statuses(system, ids)
            if len(found) == len(ids) and all(s in ("COMPLETED", "COMPENSATED") for s in found.values()):
                return found
            await asyncio.sleep(0.2)


async def invariants(system: stack.Supervisor) -> check.Report:
    return await check.run({role: system.topology.url(role) for role in pg.DATABASES})


async def test_payment_killed_and_restarted_mid_load_retries_then_completes_or_compensates(
    system: stack.Supervisor,
) -> None:
    load = asyncio.create_task(post_many(system, 40, 0.05))
    await asyncio.sleep(0.5)
    system.signal("payment", signal.SIGKILL)
    ids = await load
    await system.wait_healthy("payment", 30)
    found = await wait_all_terminal(system, ids, within=60)
    assert system.children["payment"].restarts == 1
    assert "COMPLETED" in found.values()
    report = await invariants(system)
    assert report.ok, report.violations


async def _readiness(system: stack.Supervisor) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"{system.topology.orchestrator_url(0)}/readyz")).status_code


async def test_database_connections_terminated_mid_load_nothing_is_lost(system: stack.Supervisor) -> None:
    databases = list(system.topology.databases.values())
    admin = await asyncpg.connect(system.topology.server_url)
    try:
        load = asyncio.create_task(post_many(system, 40, 0.05))
        await asyncio.sleep(0.5)
        for name in databases:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
        )
        async with asyncio.timeout(10):
            while await _readiness(system) != 503:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        for name in databases:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        ids = await load
        async with asyncio.timeout(15):
            while await _readiness(system) != 200:
                await asyncio.sleep(0.1)
        connections = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
        )
    finally:
        for name in databases:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    assert connections <= 2 * 10 + 3 * 10, "pools reconnect within their bounds, no storm"
    await wait_all_terminal(system, ids, within=60)
    report = await invariants(system)
    assert report.ok, report.violations
