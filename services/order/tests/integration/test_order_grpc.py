"""The order service through a real gRPC channel, asserting on the rows of a real database."""

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagaline_contracts.order.v1 import order_pb2

CONCURRENCY = 20
Code = grpc.StatusCode


async def _fails_with(call: Any, code: grpc.StatusCode, case: object = None) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, (case, caught.value.details())
    return str(caught.value.details())


async def test_create_computes_the_total_and_stores_the_order(service: Any) -> None:
    request = service.requests.create()
    response = await service.stub.CreateOrder(request)
    order = response.order
    assert order.status == order_pb2.ORDER_STATUS_CREATED
    assert order.total_amount == "22.00"
    assert [(i.sku, i.quantity, i.unit_price) for i in order.items] == [("SKU-1", 2, "10.25"), ("SKU-2", 3, "0.50")]
    row = await service.db.fetchrow("SELECT * FROM orders WHERE id = $1", uuid.UUID(order.order_id))
    assert (row["status"], row["total_amount"], row["currency"]) == ("CREATED", Decimal("22.00"), "USD")
    assert str(row["saga_id"]) == request.saga_id
    assert row["idempotency_key"] == request.idempotency_key
    assert await service.count("order_items", "order_id = $1", row["id"]) == 2


async def test_create_twice_gives_one_order_and_the_same_bytes(service: Any) -> None:
    request = service.requests.create()
    first = await service.stub.CreateOrder(request)
    second = await service.stub.CreateOrder(request)
    assert first.SerializeToString() == second.SerializeToString()
    assert await service.count("orders") == 1
    assert await service.count("order_items") == 2


async def test_create_replay_after_confirmation_still_answers_created(service: Any) -> None:
    request = service.requests.create()
    first = await service.stub.CreateOrder(request)
    await service.stub.ConfirmOrder(service.requests.confirm(first.order.order_id))
    replay = await service.stub.CreateOrder(request)
    assert replay.SerializeToString() == first.SerializeToString()


async def test_concurrent_duplicate_creates_give_one_order(service: Any) -> None:
    request = service.requests.create()
    responses = await asyncio.gather(*(service.stub.CreateOrder(request) for _ in range(CONCURRENCY)))
    assert len({r.SerializeToString() for r in responses}) == 1
    assert await service.count("orders") == 1
    assert await service.count("order_items") == 2


async def test_a_key_reused_with_another_request_is_refused(service: Any) -> None:
    request = service.requests.create()
    await service.stub.CreateOrder(request)
    other = service.requests.create(request.idempotency_key, request.saga_id, currency="EUR")
    await _fails_with(service.stub.CreateOrder(other), Code.FAILED_PRECONDITION)
    assert await service.db.fetchval("SELECT currency FROM orders") == "USD"


async def test_confirm_twice_gives_one_effect_and_the_same_bytes(service: Any) -> None:
    created = await service.stub.CreateOrder(service.requests.create())
    request = service.requests.confirm(created.order.order_id)
    first = await service.stub.ConfirmOrder(request)
    second = await service.stub.ConfirmOrder(request)
    assert first.SerializeToString() == second.SerializeToString()
    assert first.order.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert await service.db.fetchval("SELECT status FROM orders") == "CONFIRMED"
    assert await service.count("order_receipts", "operation = 'CONFIRM'") == 1


async def test_concurrent_duplicate_confirms_give_one_receipt(service: Any) -> None:
    created = await service.stub.CreateOrder(service.requests.create())
    request = service.requests.confirm(created.order.order_id)
    responses = await asyncio.gather(*(service.stub.ConfirmOrder(request) for _ in range(CONCURRENCY)))
    assert len({r.SerializeToString() for r in responses}) == 1
    assert await service.count("order_receipts") == 1


async def test_confirm_with_another_key_returns_the_confirmed_order(service: Any) -> None:
    order_id = (await service.stub.CreateOrder(service.requests.create())).order.order_id
    first = await service.stub.ConfirmOrder(service.requests.confirm(order_id, "confirm-a"))
    second = await service.stub.ConfirmOrder(service.requests.confirm(order_id, "confirm-b"))
    assert first.SerializeToString() == second.SerializeToString()


async def test_confirm_of_an_unknown_order_is_not_found_and_persists_nothing(service: Any) -> None:
    await _fails_with(service.stub.ConfirmOrder(service.requests.confirm(str(uuid.uuid4()))), Code.NOT_FOUND)
    assert await service.count("order_receipts") == 0


async def test_confirm_of_a_cancelled_order_is_declined_and_persists_nothing(service: Any) -> None:
    request = service.requests.create()
    order_id = (await service.stub.CreateOrder(request)).order.order_id
    await service.stub.CancelOrder(service.requests.cancel(request.idempotency_key))
    confirm = service.requests.confirm(order_id)
    for _ in range(2):
        await _fails_with(service.stub.ConfirmOrder(confirm), Code.FAILED_PRECONDITION)
    assert await service.db.fetchval("SELECT status FROM orders") == "CANCELLED"
    assert await service.count("order_receipts", "operation = 'CONFIRM'") == 0


async def test_cancel_twice_gives_one_effect_and_the_same_bytes(service: Any) -> None:
    request = service.requests.create()
    order_id = (await service.stub.CreateOrder(request)).order.order_id
    cancel = service.requests.cancel(request.idempotency_key)
    first = await service.stub.CancelOrder(cancel)
    second = await service.stub.CancelOrder(cancel)
    assert first.SerializeToString() == second.SerializeToString()
    assert (first.order_id, first.status) == (order_id, order_pb2.ORDER_STATUS_CANCELLED)
    assert await service.db.fetchval("SELECT status FROM orders") == "CANCELLED"
    assert await service.count("order_receipts") == 1
    assert await service.count("order_tombstones") == 0


async def test_concurrent_duplicate_cancels_give_one_effect(service: Any) -> None:
    request = service.requests.create()
    await service.stub.CreateOrder(request)
    cancel = service.requests.cancel(request.idempotency_key)
    responses = await asyncio.gather(*(service.stub.CancelOrder(cancel) for _ in range(CONCURRENCY)))
    assert len({r.SerializeToString() for r in responses}) == 1
    assert await service.count("order_receipts") == 1


async def test_cancel_of_a_confirmed_order_is_declined_and_persists_nothing(service: Any) -> None:
    request = service.requests.create()
    order_id = (await service.stub.CreateOrder(request)).order.order_id
    await service.stub.ConfirmOrder(service.requests.confirm(order_id))
    await _fails_with(
        service.stub.CancelOrder(service.requests.cancel(request.idempotency_key)), Code.FAILED_PRECONDITION
    )
    assert await service.db.fetchval("SELECT status FROM orders") == "CONFIRMED"
    assert await service.count("order_receipts", "operation = 'CANCEL'") == 0
    assert await service.count("order_tombstones") == 0


async def test_cancel_before_create_leaves_nothing_held_and_refuses_the_late_create(service: Any) -> None:
    request = service.requests.create()
    cancel = service.requests.cancel(request.idempotency_key)
    first = await service.stub.CancelOrder(cancel)
    second = await service.stub.CancelOrder(cancel)
    assert first == second == order_pb2.CancelOrderResponse()
    assert first.SerializeToString() == second.SerializeToString()
    details = await _fails_with(service.stub.CreateOrder(request), Code.FAILED_PRECONDITION)
    assert "cancelled before it was created" in details
    assert await service.count("orders") == 0
    assert await service.count("order_items") == 0
    tombstone = await service.db.fetchrow("SELECT * FROM order_tombstones")
    assert tombstone["action_idempotency_key"] == request.idempotency_key
    assert tombstone["cancel_idempotency_key"] == cancel.idempotency_key
    assert str(tombstone["saga_id"]) == cancel.saga_id


async def test_a_second_cancel_key_for_a_tombstoned_action_changes_nothing(service: Any) -> None:
    action = "create-never-sent"
    await service.stub.CancelOrder(service.requests.cancel(action, "cancel-1"))
    response = await service.stub.CancelOrder(service.requests.cancel(action, "cancel-2"))
    assert response == order_pb2.CancelOrderResponse()
    assert await service.count("order_tombstones") == 1
    assert await service.db.fetchval("SELECT cancel_idempotency_key FROM order_tombstones") == "cancel-1"


def _item(**changes: Any) -> order_pb2.OrderItem:
    return order_pb2.OrderItem(**({"sku": "SKU-1", "quantity": 1, "unit_price": "1.00"} | changes))


INVALID_CREATES: list[dict[str, Any]] = [
    {"idempotency_key": ""},
    {"idempotency_key": "x" * 256},
    {"saga_id": ""},
    {"saga_id": "not-a-uuid"},
    {"customer_id": ""},
    {"customer_id": "customer-7"},
    {"currency": ""},
    {"currency": "usd"},
    {"items": []},
    {"items": [_item(quantity=0)]},
    {"items": [_item(quantity=-3)]},
    {"items": [_item(sku="")]},
    {"items": [_item(unit_price="")]},
    {"items": [_item(unit_price="NaN")]},
    {"items": [_item(unit_price="-1.00")]},
    {"items": [_item(unit_price="1.234")]},
    {"items": [_item(unit_price="1e2")]},
    {"items": [_item(unit_price="ten")]},
]

INVALID_REQUESTS: list[tuple[str, Any]] = [
    ("ConfirmOrder", order_pb2.ConfirmOrderRequest(saga_id=str(uuid.uuid4()), order_id=str(uuid.uuid4()))),
    ("ConfirmOrder", order_pb2.ConfirmOrderRequest(idempotency_key="k", order_id=str(uuid.uuid4()))),
    ("ConfirmOrder", order_pb2.ConfirmOrderRequest(idempotency_key="k", saga_id=str(uuid.uuid4()), order_id="7")),
    ("CancelOrder", order_pb2.CancelOrderRequest(saga_id=str(uuid.uuid4()), action_idempotency_key="a")),
    ("CancelOrder", order_pb2.CancelOrderRequest(idempotency_key="k", saga_id="x", action_idempotency_key="a")),
    ("CancelOrder", order_pb2.CancelOrderRequest(idempotency_key="k", saga_id=str(uuid.uuid4()))),
    ("GetOrder", order_pb2.GetOrderRequest(order_id="")),
    ("GetOrder", order_pb2.GetOrderRequest(order_id="order-1")),
]


async def test_invalid_creates_are_invalid_argument_and_persist_nothing(service: Any) -> None:
    # One database for every case (a fresh one per case would dominate the suite's run time).
    for changes in INVALID_CREATES:
        request = service.requests.create(**changes)
        await _fails_with(service.stub.CreateOrder(request), Code.INVALID_ARGUMENT, changes)
    assert await service.count("orders") == 0
    assert await service.count("order_items") == 0


async def test_invalid_requests_are_invalid_argument_and_persist_nothing(service: Any) -> None:
    for method, request in INVALID_REQUESTS:
        await _fails_with(getattr(service.stub, method)(request), Code.INVALID_ARGUMENT, request)
    for table in ("orders", "order_receipts", "order_tombstones"):
        assert await service.count(table) == 0


async def test_get_returns_the_current_order_or_not_found(service: Any) -> None:
    created = await service.stub.CreateOrder(service.requests.create())
    confirmed = await service.stub.ConfirmOrder(service.requests.confirm(created.order.order_id))
    fetched = await service.stub.GetOrder(order_pb2.GetOrderRequest(order_id=created.order.order_id))
    assert fetched == confirmed.order
    await _fails_with(service.stub.GetOrder(order_pb2.GetOrderRequest(order_id=str(uuid.uuid4()))), Code.NOT_FOUND)


async def test_health_is_serving_and_the_probes_answer(service: Any) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "sagaline.order.v1.OrderService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.running.http_port}") as client:
        for path in ("/livez", "/readyz"):
            assert (await client.get(path)).status_code == 200
        assert "grpc_request_duration_seconds" in (await client.get("/metrics")).text
