"""The oracle of the fault tests, judged: each kind of violation planted alone must be caught, and only it.

A fault test that ends with `report.ok` proves something only if the checker would have seen the bug.
So every test here starts from a real stack's four databases (migrated and seeded as `sagaline up`
does, no process running) holding a clean baseline that must pass, plants one violation with plain
SQL, and asserts that the checker names exactly that saga (or customer, or SKU) and that rule. The
fragments asserted are those of the rule under test: with that check removed, its test fails even
where another rule happens to notice the same rows.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sagaline import check, pg, stack
from tests.e2e.conftest import ALICE

WIDGETS = {"SKU-WIDGET": 2}


@pytest.fixture(scope="module")
async def seeded(pg_server: str) -> AsyncIterator[stack.Topology]:
    """The four databases, migrated and seeded once; each test works on its own copy."""
    topology = stack.Topology.ephemeral(pg_server, f"oracle_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    await stack.prepare(topology, out=io.StringIO())
    yield topology
    for name in topology.databases.values():
        await pg.drop_database(pg_server, name)


class Plant:
    """Writes participant and orchestrator rows directly, keeping every constraint and conservation."""

    def __init__(self, topology: stack.Topology, conns: dict[str, asyncpg.Connection]) -> None:
        self.topology = topology
        self.orch = conns["saga_orchestrator"]
        self.orders = conns["order_service"]
        self.payments = conns["payment_service"]
        self.stock = conns["inventory_service"]

    async def check(self, **options: Any) -> check.Report:
        return await check.run({role: self.topology.url(role) for role in pg.DATABASES}, **options)

    async def saga(self, status: str, *, error: str | None = None, owner: str | None = None,
                   lease_in: float | None = None, next_in: float = 0.0, deadline_in: float = 60.0,
                   fence: int = 1) -> uuid.UUID:  # fmt: skip
        """A saga row; times are seconds from the database's now (negative: in the past)."""
        sid = uuid.uuid4()
        await self.orch.execute(
            """INSERT INTO sagas (id, saga_type, definition_version, status, payload, deadline, on_timeout, error,
                                  owner_id, fence, lease_expires_at, next_attempt_at)
               VALUES ($1, 'order_saga', 1, $2, '{}'::jsonb, clock_timestamp() + make_interval(secs => $3),
                       'compensate', $4, $5, $6, clock_timestamp() + make_interval(secs => $7),
                       clock_timestamp() + make_interval(secs => $8))""",
            sid, status, deadline_in, error, owner, fence, lease_in, next_in,
        )  # fmt: skip
        return sid

    async def event(self, sid: uuid.UUID, fence: int, owner: str, ago: float = 0.0) -> float:
        """A `lease_acquired` event `ago` seconds back; returns when, in unix seconds (database clock)."""
        at = await self.orch.fetchval(
            """INSERT INTO saga_events (saga_id, fence, owner_id, kind, created_at)
               VALUES ($1, $2, $3, 'lease_acquired', clock_timestamp() - make_interval(secs => $4))
               RETURNING extract(epoch FROM created_at)::float8""",
            sid, fence, owner, ago,
        )  # fmt: skip
        return float(at)

    async def order(self, sid: uuid.UUID, status: str, total: str = "12.00") -> str:
        key = f"{sid}:create_order:{uuid.uuid4().hex[:6]}"
        await self.orders.execute(
            """INSERT INTO orders (id, saga_id, idempotency_key, customer_id, status, total_amount, currency)
               VALUES ($1, $2, $3, $4, $5, $6, 'USD')""",
            uuid.uuid4(), sid, key, uuid.UUID(ALICE), status, Decimal(total),
        )  # fmt: skip
        return key

    async def payment(self, sid: uuid.UUID, status: str, amount: str = "12.00") -> tuple[uuid.UUID, str]:
        """A payment of ALICE's; a captured one is debited from her balance, as the ledger would."""
        pid, key = uuid.uuid4(), f"{sid}:process_payment:{uuid.uuid4().hex[:6]}"
        await self.payments.execute(
            """INSERT INTO payments (id, saga_id, idempotency_key, customer_id, amount, currency, status, refunded_at)
               VALUES ($1, $2, $3, $4, $5, 'USD', $6, CASE WHEN $6 = 'REFUNDED' THEN clock_timestamp() END)""",
            pid, sid, key, uuid.UUID(ALICE), Decimal(amount), status,
        )  # fmt: skip
        if status == "CAPTURED":
            await self.payments.execute(
                "UPDATE accounts SET balance = balance - $2 WHERE customer_id = $1", uuid.UUID(ALICE), Decimal(amount)
            )
        return pid, key

    async def reservation(self, sid: uuid.UUID, status: str, items: dict[str, int] = WIDGETS) -> str:
        """A reservation with its items; a held one moves its stock from available to reserved."""
        rid, key = uuid.uuid4(), f"{sid}:reserve_inventory:{uuid.uuid4().hex[:6]}"
        await self.stock.execute(
            """INSERT INTO reservations (id, saga_id, idempotency_key, status, released_at)
               VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'RELEASED' THEN clock_timestamp() END)""",
            rid, sid, key, status,
        )  # fmt: skip
        for sku, quantity in items.items():
            await self.stock.execute("INSERT INTO reservation_items VALUES ($1, $2, $3)", rid, sku, quantity)
            if status == "RESERVED":
                await self.stock.execute(
                    "UPDATE stock SET available = available - $2, reserved = reserved + $2 WHERE sku = $1",
                    sku,
                    quantity,
                )
        return key

    async def refund(self, sid: uuid.UUID, payment: tuple[uuid.UUID, str]) -> None:
        """A refund row under a fresh refund key (the credit itself is the payment's status)."""
        await self.payments.execute(
            """INSERT INTO refunds (idempotency_key, saga_id, action_idempotency_key, payment_id, refunded_amount)
               VALUES ($1, $2, $3, $4, 12.00)""",
            f"{sid}:refund:{uuid.uuid4().hex[:6]}", sid, payment[1], payment[0],
        )  # fmt: skip

    async def completed(self) -> uuid.UUID:
        sid = await self.saga("COMPLETED")
        await self.order(sid, "CONFIRMED")
        await self.payment(sid, "CAPTURED")
        await self.reservation(sid, "RESERVED")
        await self.event(sid, 1, "orchestrator-1", ago=30)
        await self.event(sid, 2, "orchestrator-2", ago=20)
        return sid

    async def compensated(self) -> uuid.UUID:
        sid = await self.saga("COMPENSATED", error="out of stock")
        await self.order(sid, "CANCELLED")
        await self.refund(sid, await self.payment(sid, "REFUNDED"))
        await self.reservation(sid, "RELEASED")
        return sid

    async def in_flight(self) -> uuid.UUID:
        """EXECUTING, leased by a live owner, with an order created so far."""
        sid = await self.saga("EXECUTING", owner="orchestrator-1", lease_in=30)
        await self.order(sid, "CREATED")
        return sid


@pytest.fixture
async def plant(pg_server: str, seeded: stack.Topology) -> AsyncIterator[Plant]:
    """A fresh copy of the seeded databases holding a clean baseline: one saga of each healthy kind."""
    prefix = f"oracle_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    topology = stack.Topology(pg_server, databases={role: f"{prefix}_{role}" for role in pg.DATABASES})
    conns: dict[str, asyncpg.Connection] = {}
    try:
        async with asyncio.TaskGroup() as copies:  # waits for every copy, even when one fails
            for role, name in topology.databases.items():
                copies.create_task(pg.create_database(pg_server, name, seeded.databases[role], exist_ok=False))
        for role in topology.databases:
            conns[role] = await asyncpg.connect(topology.url(role))
        planter = Plant(topology, conns)
        await planter.completed()
        await planter.compensated()
        await planter.in_flight()
        yield planter
    finally:
        for conn in conns.values():
            await conn.close()
        await asyncio.gather(*(pg.drop_database(pg_server, name) for name in topology.databases.values()))


async def test_the_clean_baseline_passes(plant: Plant) -> None:
    report = await plant.check(journal=[])
    assert report.ok, report.violations
    assert (report.counts["COMPLETED"], report.counts["COMPENSATED"], report.counts["EXECUTING"]) == (1, 1, 1)
    assert (report.needs_person, report.stranded, report.stale_calls) == ([], [], 0)
    assert "verdict: OK" in check.render(report)


# -- one violation at a time: each plants it and returns (whom the violation names, the rule's words) --

Case = Callable[[Plant], Awaitable[tuple[str, str]]]


async def completed_without_captured_payment(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPLETED")
    await p.order(sid, "CONFIRMED")
    await p.reservation(sid, "RESERVED")
    return str(sid), "COMPLETED but the captured payment does not equal the order total"


async def compensated_with_stock_still_reserved(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPENSATED", error="payment declined")
    await p.order(sid, "CANCELLED")
    await p.reservation(sid, "RESERVED")
    return str(sid), "COMPENSATED but stock is still reserved"


async def money_not_conserved(p: Plant) -> tuple[str, str]:
    await p.payments.execute("UPDATE accounts SET balance = balance + 1 WHERE customer_id = $1", uuid.UUID(ALICE))
    return f"customer {ALICE}", "initial 1000000000.00 != balance 999999989.00"


async def stock_reserved_that_no_reservation_holds(p: Plant) -> tuple[str, str]:
    await p.stock.execute(
        "UPDATE stock SET available = available - 1, reserved = reserved + 1 WHERE sku = 'SKU-GADGET'"
    )
    return "sku SKU-GADGET", "reserved 1, held by reservations 0"


def applied_twice(effect: str) -> Case:
    async def case(p: Plant) -> tuple[str, str]:
        sid = await p.saga("EXECUTING", owner="orchestrator-1", lease_in=30)
        apply = {
            "orders": lambda: p.order(sid, "CREATED"),
            "payments": lambda: p.payment(sid, "CAPTURED"),
            "reservations": lambda: p.reservation(sid, "RESERVED"),
        }[effect]
        await apply()
        await apply()
        return str(sid), f"2 {effect} (an effect applied twice)"

    return case


async def payment_refunded_twice(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPENSATED", error="out of stock")
    payment = await p.payment(sid, "REFUNDED")
    await p.refund(sid, payment)
    await p.refund(sid, payment)
    return str(sid), f"payment {payment[0]} refunded 2 times"


def applied_after_tombstone(effect: str) -> Case:
    async def case(p: Plant) -> tuple[str, str]:
        sid = await p.saga("EXECUTING", owner="orchestrator-1", lease_in=30)
        if effect == "order":
            key = await p.order(sid, "CREATED")
            await p.orders.execute("INSERT INTO order_tombstones VALUES ($1, $2, $3)", key, sid, f"{key}:cancel")
        elif effect == "payment":
            _, key = await p.payment(sid, "CAPTURED")
            await p.payments.execute("INSERT INTO payment_tombstones VALUES ($1, $2)", key, sid)
        else:
            key = await p.reservation(sid, "RESERVED")
            await p.stock.execute(
                "INSERT INTO releases (action_idempotency_key, idempotency_key, saga_id) VALUES ($1, $2, $3)",
                key, f"{key}:release", sid,
            )  # fmt: skip
        return str(sid), f"{effect} applied under key {key} after its compensation left a tombstone"

    return case


async def fence_decreases(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPLETED")
    await p.order(sid, "CONFIRMED")
    await p.payment(sid, "CAPTURED")
    await p.reservation(sid, "RESERVED")
    await p.event(sid, 2, "orchestrator-2", ago=20)
    await p.event(sid, 1, "orchestrator-1", ago=10)
    return str(sid), "the fencing token decreased"


def failed_past_point_of_no_return(payment: str | None, reservation: str | None, lost: str) -> Case:
    async def case(p: Plant) -> tuple[str, str]:
        sid = await p.saga("FAILED", error="compensation of process_payment failed")
        await p.order(sid, "CONFIRMED")
        if payment:
            await p.payment(sid, payment)
        if reservation:
            await p.reservation(sid, reservation)
        return str(sid), f"(FAILED): order CONFIRMED but {lost} (compensated past the point of no return)"

    return case


async def failed_without_reason(p: Plant) -> tuple[str, str]:
    return str(await p.saga("FAILED")), "FAILED without a reason"


async def live_long_past_deadline(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPENSATING", owner="orchestrator-1", lease_in=30, deadline_in=-200)
    return str(sid), "still COMPENSATING 75s past its deadline"


async def stranded_without_owner(p: Plant) -> tuple[str, str]:
    sid = await p.saga("EXECUTING", owner=None, next_in=3600)
    return str(sid), "stranded EXECUTING, no live lease and not due for"


async def stranded_with_an_expired_lease(p: Plant) -> tuple[str, str]:
    sid = await p.saga("COMPENSATING", owner="orchestrator-dead", lease_in=-10, next_in=600)
    return str(sid), "stranded COMPENSATING, no live lease and not due for"


CASES = {
    "completed-without-captured-payment": completed_without_captured_payment,
    "compensated-with-stock-still-reserved": compensated_with_stock_still_reserved,
    "money-not-conserved": money_not_conserved,
    "stock-reserved-that-no-reservation-holds": stock_reserved_that_no_reservation_holds,
    **{f"{effect}-applied-twice": applied_twice(effect) for effect in ("orders", "payments", "reservations")},
    "payment-refunded-twice": payment_refunded_twice,
    **{f"{effect}-applied-after-its-tombstone": applied_after_tombstone(effect)
       for effect in ("order", "payment", "reservation")},
    "fence-decreases": fence_decreases,
    "failed-confirmed-with-payment-refunded": failed_past_point_of_no_return(
        "REFUNDED", "RESERVED", "payment REFUNDED 12.00"),
    "failed-confirmed-without-payment": failed_past_point_of_no_return(None, "RESERVED", "no payment"),
    "failed-confirmed-with-stock-released": failed_past_point_of_no_return(
        "CAPTURED", "RELEASED", "stock released (2 x SKU-WIDGET)"),
    "failed-confirmed-without-reservation": failed_past_point_of_no_return("CAPTURED", None, "no stock reserved"),
    "failed-without-reason": failed_without_reason,
    "live-long-past-deadline": live_long_past_deadline,
    "stranded-without-owner": stranded_without_owner,
    "stranded-with-an-expired-lease": stranded_with_an_expired_lease,
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_planted_violation_is_caught_and_nothing_else(plant: Plant, case: Case) -> None:
    subject, rule = await case(plant)
    report = await plant.check()
    assert not report.ok
    assert any(rule in v for v in report.violations), report.violations
    assert all(subject in v for v in report.violations), "only the planted subject is blamed"
    assert "VIOLATION" in check.render(report)


async def test_a_stranded_saga_is_listed_as_stranded(plant: Plant) -> None:
    sid = await plant.saga("EXECUTING", owner=None, next_in=3600)
    report = await plant.check()
    assert report.stranded == [str(sid)]
    assert "stranded sagas (no lease, not due): 1" in check.render(report)


@pytest.mark.parametrize(
    ("owner", "lease_in", "next_in"),
    [("orchestrator-1", 30.0, 3600.0), (None, None, 0.0), (None, None, 3.0), ("orchestrator-dead", -10.0, -1.0)],
    ids=["leased-though-not-due", "unleased-and-due", "due-within-the-slack", "lease-expired-and-due"],
)
async def test_a_live_saga_someone_can_take_is_not_stranded(
    plant: Plant, owner: str | None, lease_in: float | None, next_in: float
) -> None:
    await plant.saga("EXECUTING", owner=owner, lease_in=lease_in, next_in=next_in)
    report = await plant.check()
    assert report.ok, report.violations
    assert report.stranded == []


async def test_the_due_slack_is_an_option(plant: Plant) -> None:
    sid = await plant.saga("PENDING", owner=None, next_in=3.0)
    report = await plant.check(due_slack=1.0)
    assert report.stranded == [str(sid)]


async def test_a_failed_saga_holding_money_needs_a_person_but_violates_nothing(plant: Plant) -> None:
    sid = await plant.saga("FAILED", error="deadline exceeded", fence=3)
    await plant.order(sid, "CREATED")
    await plant.payment(sid, "CAPTURED")
    await plant.reservation(sid, "RESERVED")
    report = await plant.check()
    assert report.ok, report.violations
    held = f"FAILED saga {sid}: order CREATED, payment CAPTURED 12.00 (still held), stock reserved (2 x SKU-WIDGET)"
    assert report.needs_person == [held]
    assert report.failed == [(str(sid), "deadline exceeded")]
    assert f"  {held}" in check.render(report)


async def test_a_failed_saga_past_the_point_of_no_return_is_a_violation_and_needs_a_person(plant: Plant) -> None:
    subject, rule = await failed_past_point_of_no_return("REFUNDED", "RESERVED", "payment REFUNDED 12.00")(plant)
    report = await plant.check()
    assert report.violations == [f"saga {subject} {rule}"]
    assert report.needs_person == [
        f"FAILED saga {subject}: order CONFIRMED, payment REFUNDED 12.00, stock reserved (2 x SKU-WIDGET)"
    ]


def call(sid: uuid.UUID, owner: str, fence: int, at: float) -> dict[str, Any]:
    return {"service": "payment", "method": "ProcessPayment", "saga_id": str(sid), "owner": owner, "fence": fence,
            "at": at}  # fmt: skip


@pytest.mark.parametrize("as_file", [False, True], ids=["entries", "jsonl-directory"])
async def test_a_call_received_after_its_lease_was_taken_over_is_stale(
    plant: Plant, tmp_path: Path, as_file: bool
) -> None:
    sid = await plant.saga("EXECUTING", owner="orchestrator-2", lease_in=30, fence=2)
    first = await plant.event(sid, 1, "orchestrator-1", ago=60)
    takeover = await plant.event(sid, 2, "orchestrator-2", ago=50)
    calls = [
        call(sid, "orchestrator-1", 1, first + 5),  # while its lease held
        call(sid, "orchestrator-1", 1, takeover + 0.5),  # in flight at the takeover: within the grace
        call(sid, "orchestrator-2", 2, takeover + 20),  # from the new owner
        call(sid, "orchestrator-1", 1, takeover + 3),  # three seconds after it lost the saga
    ]
    journal: list[dict[str, Any]] | Path = calls
    if as_file:
        journal = tmp_path / "journal"
        journal.mkdir()
        (journal / "payment.jsonl").write_text("\n".join(json.dumps(c) for c in calls) + "\n")
    report = await plant.check(journal=journal)
    assert (report.calls_judged, report.stale_calls) == (4, 1)
    assert report.violations == [
        f"saga {sid}: payment.ProcessPayment from orchestrator-1 fence 1 received 3.000s after fence 2 took over"
    ]
    assert "journal: 4 call(s) judged, 1 after a lost lease" in check.render(report)


async def test_a_wider_grace_forgives_the_late_call(plant: Plant) -> None:
    sid = await plant.saga("EXECUTING", owner="orchestrator-2", lease_in=30, fence=2)
    takeover = await plant.event(sid, 2, "orchestrator-2", ago=50)
    report = await plant.check(journal=[call(sid, "orchestrator-1", 1, takeover + 3)], grace=5.0)
    assert report.ok, report.violations


async def test_an_unreadable_journal_entry_is_refused_not_passed(plant: Plant) -> None:
    with pytest.raises(ValueError, match="bad journal entry"):
        await plant.check(journal=[{"service": "payment", "saga_id": "not-a-uuid"}])
