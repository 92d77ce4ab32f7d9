"""`make demo`: one saga of each outcome against a running stack, then a table of what happened.

The deadline case asks for a 1 ms deadline, which has passed before the first step can finish: the
saga stops going forward and compensates whatever may have happened (a tombstone at the order service).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx

from sagaline import stack

ALICE, BOB, CAROL = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
)
CASES: list[tuple[str, str, str, str, str | None]] = [
    ("completed", ALICE, "SKU-WIDGET", "19.99", None),
    ("payment declined", BOB, "SKU-WIDGET", "500.00", None),
    ("out of stock", CAROL, "SKU-RARE", "5.00", None),
    ("deadline", ALICE, "SKU-GADGET", "7.50", "1ms"),
]
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


def run_case(client: httpx.Client, customer: str, sku: str, price: str, deadline: str | None) -> dict[str, Any]:
    """Start one saga and wait for it to end."""
    body: dict[str, Any] = {
        "saga_type": "order_saga",
        "payload": {"customer_id": customer, "currency": "USD",
                    "items": [{"sku": sku, "quantity": 1, "unit_price": price}]},
    }  # fmt: skip
    if deadline:
        body["deadline"] = deadline
    response = client.post("/v1/sagas", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    response.raise_for_status()
    saga_id = response.json()["id"]
    until = time.monotonic() + 90
    while time.monotonic() < until:
        saga: dict[str, Any] = client.get(f"/v1/sagas/{saga_id}").json()
        if saga["status"] in TERMINAL:
            return saga
        time.sleep(0.1)
    return saga


async def participant_state(topology: stack.Topology, saga_ids: list[str]) -> dict[str, dict[str, str]]:
    """What each participant holds for each saga: order status, payment status, reservation status."""
    ids = [uuid.UUID(s) for s in saga_ids]
    state: dict[str, dict[str, str]] = {s: {} for s in saga_ids}
    queries = {
        "order": ("order_service", "SELECT saga_id, status || ' ' || total_amount AS v FROM orders"),
        "payment": ("payment_service", "SELECT saga_id, status || ' ' || amount AS v FROM payments"),
        "stock": ("inventory_service", "SELECT saga_id, status AS v FROM reservations"),
    }
    for column, (database, sql) in queries.items():
        conn = await asyncpg.connect(topology.url(database))
        try:
            for row in await conn.fetch(f"{sql} WHERE saga_id = ANY($1::uuid[])", ids):
                state[str(row["saga_id"])][column] = row["v"]
        finally:
            await conn.close()
    return state


def table(results: list[tuple[str, dict[str, Any]]], state: dict[str, dict[str, str]]) -> str:
    """The outcome of every case with what each participant kept."""
    rows = [["case", "saga", "status", "reason", "order", "payment", "stock"]]
    for name, saga in results:
        held = state.get(saga["id"], {})
        reason = (saga.get("error") or "")[:48]
        rows.append([name, saga["id"][:8], saga["status"], reason, held.get("order", "-"), held.get("payment", "-"),
                     held.get("stock", "-")])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
