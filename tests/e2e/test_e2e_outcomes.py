"""Completed, declined and out-of-stock sagas over real processes, judged from the four databases."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from sagaline import check, pg, stack
from tests.e2e.conftest import ALICE, BOB, CAROL, order

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}


async def wait_terminal(client: httpx.AsyncClient, saga_id: str, within: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            saga: dict[str, Any] = (await client.get(f"/v1/sagas/{saga_id}")).json()
            if saga["status"] in TERMINAL:
                return saga
            await asyncio.sleep(0.05)


async def start(client: httpx.AsyncClient, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return await client.post("/v1/sagas", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


async def invariants(system: stack.Supervisor) -> check.Report:
    topology = system.topology
    return await check.run({role: topology.url(role) for role in pg.DATABASES})


async def test_sagas_through_both_instances_end_as_the_spec_says(system: stack.Supervisor) -> None:
    cases = [(ALICE, "SKU-WIDGET", "COMPLETED"), (BOB, "SKU-WIDGET", "COMPENSATED"), (CAROL, "SKU-RARE", "COMPENSATED")]
    results = []
    for i, (customer, sku, expected) in enumerate(cases * 2):
        async with httpx.AsyncClient(base_url=system.topology.orchestrator_url(i % 2)) as client:
            response = await start(client, order(customer, sku, quantity=1, price="60.00"))
            assert response.status_code == 202, response.text
            assert response.headers["location"] == f"/v1/sagas/{response.json()['id']}"
            results.append((await wait_terminal(client, response.json()["id"]), expected))
    for saga, expected in results:
        assert saga["status"] == expected, saga
    topology = system.topology
    orders = await asyncpg.connect(topology.url("order_service"))
    try:
        completed = [s for s, e in results if e == "COMPLETED"]
        for saga in completed:
            row = await orders.fetchrow(
                "SELECT status, total_amount FROM orders WHERE saga_id = $1", uuid.UUID(saga["id"])
            )
            assert row["status"] == "CONFIRMED"
            assert str(row["total_amount"]) == "60.00"
    finally:
        await orders.close()
    declined = [s for s, _ in results if s["payload"]["customer_id"] == BOB]
    assert all("process_payment" in s["error"] for s in declined)
    steps = {s["name"]: s["status"] for s in declined[0]["steps"]}
    # The declined payment is compensated too: its tombstone refuses any delayed duplicate of the charge.
    assert steps == {"create_order": "COMPENSATED", "process_payment": "COMPENSATED", "reserve_inventory": "PENDING",
                     "confirm_order": "PENDING"}  # fmt: skip
    payment_step = next(s for s in declined[0]["steps"] if s["name"] == "process_payment")
    assert "insufficient" in payment_step["last_error"].lower()
    report = await invariants(system)
    assert report.ok, report.violations


async def test_duplicate_requests_across_both_instances_make_one_saga(system: stack.Supervisor) -> None:
    key, body = str(uuid.uuid4()), order(ALICE)
    clients = [httpx.AsyncClient(base_url=system.topology.orchestrator_url(i % 2)) for i in range(2)]
    try:
        responses = await asyncio.gather(*(start(clients[i % 2], body, key) for i in range(50)))
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 1
        assert sorted(r.status_code for r in responses).count(202) == 1
        assert all(r.status_code in (200, 202) for r in responses)
        other = await start(clients[0], order(ALICE, quantity=2), key)
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        await wait_terminal(clients[0], ids.pop())
    finally:
        for client in clients:
            await client.aclose()
    orchestrator_db = await asyncpg.connect(system.topology.url("saga_orchestrator"))
    try:
        assert await orchestrator_db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 1
    finally:
        await orchestrator_db.close()
