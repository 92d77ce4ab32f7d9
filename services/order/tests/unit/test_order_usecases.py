import itertools
import uuid
from decimal import Decimal
from typing import Any

import pytest

from order_service import domain, usecases

SAGA = str(uuid.UUID(int=100))
CUSTOMER = str(uuid.UUID(int=200))


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter))


@pytest.fixture
def orders(fake_store: Any) -> usecases.Orders:
    return usecases.Orders(fake_store, new_id=_ids())


def _create(key: str = "create-1", **changes: Any) -> usecases.CreateOrder:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "saga_id": SAGA,
        "customer_id": CUSTOMER,
        "currency": "USD",
        "items": (usecases.ItemInput("SKU-1", 2, "10.25"), usecases.ItemInput("SKU-2", 1, "0.5")),
    }
    return usecases.CreateOrder(**(fields | changes))


def _confirm(order_id: uuid.UUID, key: str = "confirm-1") -> usecases.ConfirmOrder:
    return usecases.ConfirmOrder(key, SAGA, str(order_id))


def _cancel(action_key: str = "create-1", key: str = "cancel-1") -> usecases.CancelOrder:
    return usecases.CancelOrder(key, SAGA, action_key)


async def test_create_computes_the_total_and_stores_a_created_order(orders: usecases.Orders, fake_store: Any) -> None:
    order = await orders.create(_create())
    assert order.status is domain.OrderStatus.CREATED
    assert order.total_amount == Decimal("21.00")
    assert [line.sku for line in order.lines] == ["SKU-1", "SKU-2"]
    assert fake_store.state.orders == {order.id: order}


async def test_create_twice_returns_the_same_order_and_stores_one(orders: usecases.Orders, fake_store: Any) -> None:
    first = await orders.create(_create())
    second = await orders.create(_create())
    assert first == second
    assert len(fake_store.state.orders) == 1


async def test_create_replay_returns_the_order_as_created_even_after_confirmation(orders: usecases.Orders) -> None:
    created = await orders.create(_create())
    await orders.confirm(_confirm(created.id))
    assert await orders.create(_create()) == created


async def test_create_and_its_compensation_lock_the_same_name(orders: usecases.Orders, fake_store: Any) -> None:
    await orders.create(_create())
    await orders.cancel(_cancel())
    create_locks, cancel_locks = (tx.locks for tx in fake_store.transactions)
    assert (domain.Operation.CREATE, "create-1") in create_locks
    assert (domain.Operation.CREATE, "create-1") in cancel_locks


async def test_a_key_reused_for_another_order_is_refused(orders: usecases.Orders, fake_store: Any) -> None:
    await orders.create(_create())
    with pytest.raises(domain.KeyReusedError):
        await orders.create(_create(currency="EUR"))
    assert len(fake_store.state.orders) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"idempotency_key": ""},
        {"saga_id": ""},
        {"saga_id": "nope"},
        {"customer_id": "nope"},
        {"currency": "usd"},
        {"items": ()},
        {"items": (usecases.ItemInput("A", 0, "1.00"),)},
        {"items": (usecases.ItemInput("A", 1, "NaN"),)},
        {"items": (usecases.ItemInput("A", 1, "-1.00"),)},
        {"items": (usecases.ItemInput("A", 1, "1.001"),)},
    ],
)
async def test_invalid_creates_persist_nothing(
    orders: usecases.Orders, fake_store: Any, changes: dict[str, Any]
) -> None:
    with pytest.raises(domain.InvalidRequestError):
        await orders.create(_create(**changes))
    assert fake_store.state.orders == {}
    assert fake_store.transactions == []


async def test_confirm_moves_created_to_confirmed_and_replays(orders: usecases.Orders, fake_store: Any) -> None:
    created = await orders.create(_create())
    confirmed = await orders.confirm(_confirm(created.id))
    assert confirmed.status is domain.OrderStatus.CONFIRMED
    assert await orders.confirm(_confirm(created.id)) == confirmed
    assert list(fake_store.state.receipts) == [(domain.Operation.CONFIRM, "confirm-1")]


async def test_confirm_with_another_key_returns_the_confirmed_order(orders: usecases.Orders, fake_store: Any) -> None:
    created = await orders.create(_create())
    first = await orders.confirm(_confirm(created.id, "confirm-1"))
    second = await orders.confirm(_confirm(created.id, "confirm-2"))
    assert first == second
    assert len(fake_store.state.receipts) == 2


async def test_confirm_of_an_unknown_order_is_not_found(orders: usecases.Orders, fake_store: Any) -> None:
    with pytest.raises(domain.NotFoundError):
        await orders.confirm(_confirm(uuid.uuid4()))
    assert fake_store.state.receipts == {}


async def test_confirm_of_a_cancelled_order_is_refused_and_recorded_nowhere(
    orders: usecases.Orders, fake_store: Any
) -> None:
    created = await orders.create(_create())
    await orders.cancel(_cancel())
    for _ in range(2):
        with pytest.raises(domain.IllegalTransitionError):
            await orders.confirm(_confirm(created.id))
    assert (domain.Operation.CONFIRM, "confirm-1") not in fake_store.state.receipts
    assert fake_store.state.orders[created.id].status is domain.OrderStatus.CANCELLED


async def test_a_confirm_key_reused_for_another_order_is_refused(orders: usecases.Orders) -> None:
    first = await orders.create(_create("a"))
    second = await orders.create(_create("b"))
    await orders.confirm(_confirm(first.id))
    with pytest.raises(domain.KeyReusedError):
        await orders.confirm(_confirm(second.id))


async def test_cancel_moves_created_to_cancelled_and_replays(orders: usecases.Orders, fake_store: Any) -> None:
    created = await orders.create(_create())
    cancelled = await orders.cancel(_cancel())
    assert cancelled is not None
    assert cancelled.status is domain.OrderStatus.CANCELLED
    assert await orders.cancel(_cancel()) == cancelled
    assert fake_store.state.orders[created.id].status is domain.OrderStatus.CANCELLED
    assert fake_store.state.tombstones == {}


async def test_cancel_with_another_key_returns_the_cancelled_order(orders: usecases.Orders) -> None:
    await orders.create(_create())
    assert await orders.cancel(_cancel(key="cancel-1")) == await orders.cancel(_cancel(key="cancel-2"))


async def test_cancel_of_a_confirmed_order_is_refused(orders: usecases.Orders, fake_store: Any) -> None:
    created = await orders.create(_create())
    await orders.confirm(_confirm(created.id))
    with pytest.raises(domain.IllegalTransitionError):
        await orders.cancel(_cancel())
    assert fake_store.state.orders[created.id].status is domain.OrderStatus.CONFIRMED
    assert (domain.Operation.CANCEL, "cancel-1") not in fake_store.state.receipts


async def test_cancel_before_create_leaves_a_tombstone_that_refuses_the_create(
    orders: usecases.Orders, fake_store: Any
) -> None:
    assert await orders.cancel(_cancel()) is None
    assert await orders.cancel(_cancel()) is None
    assert await orders.cancel(_cancel(key="cancel-2")) is None
    with pytest.raises(domain.TombstonedError):
        await orders.create(_create())
    assert fake_store.state.orders == {}
    assert fake_store.state.tombstones["create-1"].cancel_key == "cancel-1"


async def test_a_cancel_key_reused_for_another_action_is_refused(orders: usecases.Orders) -> None:
    await orders.cancel(_cancel("create-1"))
    with pytest.raises(domain.KeyReusedError):
        await orders.cancel(_cancel("create-2"))


@pytest.mark.parametrize(
    "command",
    [
        usecases.CancelOrder("", SAGA, "create-1"),
        usecases.CancelOrder("cancel-1", "", "create-1"),
        usecases.CancelOrder("cancel-1", SAGA, ""),
    ],
)
async def test_invalid_cancels_persist_nothing(
    orders: usecases.Orders, fake_store: Any, command: usecases.CancelOrder
) -> None:
    with pytest.raises(domain.InvalidRequestError):
        await orders.cancel(command)
    assert fake_store.transactions == []


async def test_get_returns_the_current_order(orders: usecases.Orders) -> None:
    created = await orders.create(_create())
    confirmed = await orders.confirm(_confirm(created.id))
    assert await orders.get(str(created.id)) == confirmed


async def test_get_of_a_missing_or_malformed_id_fails(orders: usecases.Orders) -> None:
    with pytest.raises(domain.NotFoundError):
        await orders.get(str(uuid.uuid4()))
    with pytest.raises(domain.InvalidRequestError):
        await orders.get("42")


async def test_a_failing_transaction_keeps_nothing(orders: usecases.Orders, fake_store: Any) -> None:
    created = await orders.create(_create())
    fake_store.fail_next("add_receipt", RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        await orders.cancel(_cancel())
    assert fake_store.state.orders[created.id].status is domain.OrderStatus.CREATED
    assert fake_store.state.receipts == {}
