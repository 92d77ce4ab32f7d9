"""What creating and confirming an order cost the database: one statement each in the common case."""

import uuid
from typing import Any

import pytest

from order_service import bootstrap, domain
from order_service.adapters.postgres import PostgresOrderStore
from order_service.usecases import CancelOrder, ConfirmOrder, CreateOrder, ItemInput, Orders

SAGA = "99999999-9999-4999-8999-999999999999"
CUSTOMER = "11111111-1111-4111-8111-111111111111"


def create(key: str) -> CreateOrder:
    return CreateOrder(key, SAGA, CUSTOMER, "USD", (ItemInput("SKU-A", 2, "4.50"), ItemInput("SKU-B", 1, "1.00")))


async def test_a_new_order_and_its_confirmation_are_one_statement_each(make_database: Any, statement_log: Any) -> None:
    pool = await statement_log.pool(await make_database(bootstrap.MIGRATIONS_DIR))
    orders = Orders(PostgresOrderStore(pool))
    warm = await orders.create(create("warm-up"))
    await orders.confirm(ConfirmOrder("warm-up-confirm", SAGA, str(warm.id)))
    statement_log.sent.clear()  # the first calls also read the types of the statements' parameters
    created = await orders.create(create("create-1"))
    confirmed = await orders.confirm(ConfirmOrder("confirm-1", SAGA, str(created.id)))
    assert statement_log.sent == ["SELECT", "SELECT"]  # was 13: BEGIN, four or five statements, COMMIT, twice
    assert confirmed == created.as_of(domain.OrderStatus.CONFIRMED)
    assert await orders.get(str(created.id)) == confirmed
    statement_log.sent.clear()
    # Replays answer what the first call answered, through the general path.
    assert await orders.create(create("create-1")) == created
    assert await orders.confirm(ConfirmOrder("confirm-1", SAGA, str(created.id))) == confirmed
    assert "BEGIN" in statement_log.sent
    # A confirmed order cannot be cancelled, a cancelled one cannot be confirmed, a tombstone refuses its key.
    with pytest.raises(domain.IllegalTransitionError):
        await orders.cancel(CancelOrder("cancel-1", SAGA, "create-1"))
    second = await orders.create(create("create-2"))
    await orders.cancel(CancelOrder("cancel-2", SAGA, "create-2"))
    with pytest.raises(domain.IllegalTransitionError):
        await orders.confirm(ConfirmOrder("confirm-2", SAGA, str(second.id)))
    assert await orders.cancel(CancelOrder("cancel-3", SAGA, "create-3")) is None
    with pytest.raises(domain.TombstonedError):
        await orders.create(create("create-3"))
    with pytest.raises(domain.NotFoundError):
        await orders.confirm(ConfirmOrder("confirm-4", SAGA, str(uuid.uuid4())))
    rows = await pool.fetch("SELECT idempotency_key, status FROM orders ORDER BY idempotency_key")
    assert [(r["idempotency_key"], r["status"]) for r in rows] == [
        ("create-1", "CONFIRMED"), ("create-2", "CANCELLED"), ("warm-up", "CONFIRMED")
    ]  # fmt: skip


async def test_a_cancellation_is_one_statement_and_answers_what_the_general_path_answers(
    make_database: Any, statement_log: Any
) -> None:
    pool = await statement_log.pool(await make_database(bootstrap.MIGRATIONS_DIR))
    orders = Orders(PostgresOrderStore(pool))
    await orders.cancel(CancelOrder("warm-up", SAGA, "nothing-there"))
    placed = await orders.create(create("create-1"))
    statement_log.sent.clear()  # the first calls also read the types of the statements' parameters
    cancelled = await orders.cancel(CancelOrder("cancel-1", SAGA, "create-1"))
    tombstoned = await orders.cancel(CancelOrder("cancel-2", SAGA, "create-2"))
    assert statement_log.sent == ["SELECT", "SELECT"]  # was BEGIN, two locks, receipt, order, update, insert, COMMIT
    assert cancelled == placed.as_of(domain.OrderStatus.CANCELLED)
    assert tombstoned is None
    # Repeats answer the same through the general path; the tombstone refuses its CreateOrder for good.
    assert await orders.cancel(CancelOrder("cancel-1", SAGA, "create-1")) == cancelled
    assert await orders.cancel(CancelOrder("cancel-2", SAGA, "create-2")) is None
    assert await orders.cancel(CancelOrder("cancel-3", SAGA, "create-1")) == cancelled  # already cancelled
    with pytest.raises(domain.TombstonedError):
        await orders.create(create("create-2"))
    with pytest.raises(domain.KeyReusedError):
        await orders.cancel(CancelOrder("cancel-1", SAGA, "create-9"))
    receipts = await pool.fetch("SELECT idempotency_key, order_id FROM order_receipts WHERE operation = 'CANCEL'")
    assert {r["idempotency_key"]: r["order_id"] for r in receipts} == {
        "warm-up": None, "cancel-1": placed.id, "cancel-2": None, "cancel-3": placed.id
    }  # fmt: skip
