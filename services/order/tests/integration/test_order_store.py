"""The store contract, run against PostgreSQL and against the unit tests' fake, so the fake stays honest."""

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from order_service import bootstrap, domain
from order_service.adapters import postgres
from servicekit import db, settings

Status = domain.OrderStatus


@pytest.fixture(params=["fake", "postgres"])
async def store(request: pytest.FixtureRequest, fake_store: Any, make_database: Any) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield fake_store
        return
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    pool = await db.create_pool(settings.DatabaseSettings(url=url, min_size=1, max_size=2))
    try:
        yield postgres.PostgresOrderStore(pool)
    finally:
        await pool.close()


def _order(key: str = "create-1") -> domain.Order:
    lines = (domain.OrderLine("B", 2, Decimal("1.50")), domain.OrderLine("A", 1, Decimal("0.00")))
    draft = domain.OrderDraft(key, uuid.uuid4(), uuid.uuid4(), "EUR", lines)
    return domain.Order.place(uuid.uuid4(), draft)


async def test_orders_read_back_as_written_and_change_status_only_from_the_expected_one(store: Any) -> None:
    order = _order()
    async with store.transaction() as tx:
        await tx.add_order(order)
    async with store.transaction() as tx:
        assert await tx.order_by_id(order.id) == order
        assert await tx.order_by_key(order.idempotency_key) == order
        assert await tx.order_by_key("other") is None
        assert await tx.order_by_id(uuid.uuid4()) is None
        await tx.change_status(order.id, Status.CREATED, Status.CONFIRMED)
    assert await store.get(order.id) == order.as_of(Status.CONFIRMED)
    assert await store.get(uuid.uuid4()) is None
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.change_status(order.id, Status.CREATED, Status.CANCELLED)
    assert (await store.get(order.id)).status is Status.CONFIRMED


async def test_receipts_and_tombstones_round_trip_and_the_first_tombstone_wins(store: Any) -> None:
    saga = uuid.uuid4()
    order = _order()
    confirm = domain.Receipt(domain.Operation.CONFIRM, "confirm-1", saga, str(order.id), order.id)
    cancel = domain.Receipt(domain.Operation.CANCEL, "cancel-1", saga, "create-2", None)
    async with store.transaction() as tx:
        await tx.add_order(order)
        await tx.add_receipt(confirm)
        await tx.add_receipt(cancel)
        await tx.add_tombstone(domain.Tombstone("create-2", saga, "cancel-1"))
        await tx.add_tombstone(domain.Tombstone("create-2", saga, "cancel-2"))
    async with store.transaction() as tx:
        assert await tx.receipt(domain.Operation.CONFIRM, "confirm-1") == confirm
        assert await tx.receipt(domain.Operation.CANCEL, "cancel-1") == cancel
        assert await tx.receipt(domain.Operation.CANCEL, "confirm-1") is None
        assert await tx.has_tombstone("create-2")
        assert not await tx.has_tombstone("create-1")


class _CrashError(Exception):
    pass


async def _write_then_crash(store: Any, order: domain.Order) -> None:
    async with store.transaction() as tx:
        await tx.lock(domain.Operation.CREATE, order.idempotency_key)
        await tx.add_order(order)
        await tx.add_tombstone(domain.Tombstone("create-9", order.saga_id, "cancel-9"))
        raise _CrashError


async def test_a_transaction_that_raises_keeps_nothing(store: Any) -> None:
    order = _order()
    with pytest.raises(_CrashError):
        await _write_then_crash(store, order)
    async with store.transaction() as tx:
        assert await tx.order_by_id(order.id) is None
        assert not await tx.has_tombstone("create-9")
