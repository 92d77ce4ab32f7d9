"""Instances die, stop or stall mid-saga: every saga still ends right, nothing is applied twice.

Sagas are held in flight deterministically by freezing the payment service (SIGSTOP): every saga
accepted meanwhile sits in `process_payment` with a call outstanding. The profile is short
(lease 3 s, poll 0.5 s) so takeovers happen within the test's patience.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from sagaline import check, pg, stack
from tests.e2e.conftest import ALICE, order, running_stack

LEASE_TTL, POLL = 3.0, 0.5


@pytest.fixture
async def system(pg_server: str) -> AsyncIterator[stack.Supervisor]:
    async for supervisor in running_stack(pg_server):
        yield supervisor


async def accept(system: stack.Supervisor, count: int, instance: int = 0) -> list[str]:
    async with httpx.AsyncClient(base_url=system.topology.orchestrator_url(instance), timeout=10) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
              for _ in range(count))
        )  # fmt: skip
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    return [r.json()["id"] for r in responses]


async def query(system: stack.Supervisor, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(system.topology.url("saga_orchestrator"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def wait_until(predicate: Any, within: float, interval: float = 0.1) -> None:
    async with asyncio.timeout(within):
        while not await predicate():
            await asyncio.sleep(interval)


async def all_at_payment(system: stack.Supervisor, ids: list[str]) -> bool:
    rows = await query(
        system,
        "SELECT count(*) AS n FROM saga_steps WHERE saga_id = ANY($1::uuid[]) AND name = 'process_payment'"
        " AND status = 'EXECUTING'",
        [uuid.UUID(i) for i in ids],
    )
    return bool(rows[0]["n"] == len(ids))


async def statuses(system: stack.Supervisor, ids: list[str]) -> dict[str, str]:
    rows = await query(system, "SELECT id, status FROM sagas WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids])
    return {str(r["id"]): r["status"] for r in rows}


async def all_terminal(system: stack.Supervisor, ids: list[str]) -> bool:
    return all(s in ("COMPLETED", "COMPENSATED", "FAILED") for s in (await statuses(system, ids)).values())


async def invariants(system: stack.Supervisor) -> check.Report:
    return await check.run({role: system.topology.url(role) for role in pg.DATABASES})


async def takeovers(system: stack.Supervisor, ids: list[str]) -> list[asyncpg.Record]:
    return await query(
        system,
        "SELECT saga_id, owner_id, fence, created_at FROM saga_events WHERE kind = 'lease_acquired'"
        " AND saga_id = ANY($1::uuid[]) ORDER BY id",
        [uuid.UUID(i) for i in ids],
    )


async def test_kill_9_of_an_owner_mid_saga_loses_and_duplicates_nothing(system: stack.Supervisor) -> None:
    system.signal("payment", signal.SIGSTOP)
    try:
        ids = await accept(system, 40, instance=0)
        await wait_until(lambda: all_at_payment(system, ids), within=20)
        killed_at = time.time()
        system.signal("orchestrator-1", signal.SIGKILL)
    finally:
        system.signal("payment", signal.SIGCONT)
    await wait_until(lambda: all_terminal(system, ids), within=LEASE_TTL + POLL + 30)
    assert set((await statuses(system, ids)).values()) == {"COMPLETED"}
    taken = await takeovers(system, ids)
    assert {str(r["saga_id"]) for r in taken} == set(ids), "every in-flight saga was taken over"
    first = min(r["created_at"].timestamp() for r in taken) - killed_at
    assert first < LEASE_TTL + POLL + 2.0, f"first takeover {first:.2f}s after kill -9"
    report = await invariants(system)
    assert report.ok, report.violations


async def test_sigterm_releases_leases_and_the_other_instance_continues(system: stack.Supervisor) -> None:
    system.signal("payment", signal.SIGSTOP)
    try:
        ids = await accept(system, 20, instance=0)
        await wait_until(lambda: all_at_payment(system, ids), within=20)
        system.signal("orchestrator-1", signal.SIGTERM)
        await wait_until(lambda: _exited(system, "orchestrator-1"), within=15)
    finally:
        system.signal("payment", signal.SIGCONT)
    assert system.children["orchestrator-1"].exits == [0]
    await wait_until(lambda: all_terminal(system, ids), within=30)
    assert set((await statuses(system, ids)).values()) == {"COMPLETED"}
    released = await query(
        system,
        "SELECT saga_id, created_at FROM saga_events WHERE kind = 'lease_released' AND saga_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids],
    )
    assert {str(r["saga_id"]) for r in released} == set(ids), "every lease was released on shutdown"
    release_at = {r["saga_id"]: r["created_at"] for r in released}
    resumed = {r["saga_id"]: r["created_at"] for r in await takeovers(system, ids) if r["fence"] == 2}
    gaps = [(resumed[s] - release_at[s]).total_seconds() for s in release_at]
    assert max(gaps) < POLL + 1.0, f"continued {max(gaps):.2f}s after release"
    report = await invariants(system)
    assert report.ok, report.violations


async def _exited(system: stack.Supervisor, name: str) -> bool:
    return bool(system.children[name].exits)


async def test_a_stalled_owner_that_wakes_has_every_write_refused(system: stack.Supervisor) -> None:
    system.signal("payment", signal.SIGSTOP)
    try:
        ids = await accept(system, 10, instance=0)
        await wait_until(lambda: all_at_payment(system, ids), within=20)
        system.signal("orchestrator-1", signal.SIGSTOP)
        await asyncio.sleep(LEASE_TTL + 3 * POLL)
        system.signal("payment", signal.SIGCONT)
        await wait_until(lambda: all_terminal(system, ids), within=30)
    finally:
        system.signal("payment", signal.SIGCONT)
        system.signal("orchestrator-1", signal.SIGCONT)
    await asyncio.sleep(2.0)  # the woken owner finishes its calls and tries to save
    assert set((await statuses(system, ids)).values()) == {"COMPLETED"}
    stale = await query(
        system,
        "SELECT count(*) AS n FROM saga_events e JOIN sagas s ON s.id = e.saga_id"
        " WHERE e.saga_id = ANY($1::uuid[]) AND e.fence = 1 AND e.id > (SELECT min(id) FROM saga_events x"
        " WHERE x.saga_id = e.saga_id AND x.fence = 2)",
        [uuid.UUID(i) for i in ids],
    )
    assert stale[0]["n"] == 0, "the stalled owner wrote after its successor"
    async with httpx.AsyncClient(base_url=system.topology.orchestrator_url(0)) as client:
        metrics = (await client.get("/metrics")).text
    lost = [line for line in metrics.splitlines() if line.startswith("saga_lease_losses_total ")]
    assert lost, "the lease-loss counter is exported"
    assert float(lost[0].split()[1]) >= 1, "the woken owner noticed it lost its leases"
    report = await invariants(system)
    assert report.ok, report.violations
