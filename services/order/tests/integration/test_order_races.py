"""Actions and compensations racing each other for the same keys, against the real service."""

import asyncio
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagaline_contracts.order.v1 import order_pb2

ACTION_KEYS = 3
OP_KEYS = 2


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error.code()


async def _race(service: Any, request: order_pb2.CreateOrderRequest) -> tuple[Any, Any]:
    create = _outcome(service.stub.CreateOrder(request))
    cancel = _outcome(service.stub.CancelOrder(service.requests.cancel(request.idempotency_key)))
    if random.random() < 0.5:
        created, cancelled = await asyncio.gather(create, cancel)
    else:
        cancelled, created = await asyncio.gather(cancel, create)
    return created, cancelled


async def test_create_racing_its_cancel_either_cancels_the_order_or_refuses_it(service: Any) -> None:
    requests = [service.requests.create() for _ in range(20)]
    outcomes = await asyncio.gather(*(_race(service, request) for request in requests))
    for request, (created, cancelled) in zip(requests, outcomes, strict=True):
        key = request.idempotency_key
        row = await service.db.fetchrow("SELECT id, status FROM orders WHERE idempotency_key = $1", key)
        tombstones = await service.count("order_tombstones", "action_idempotency_key = $1", key)
        if created == grpc.StatusCode.FAILED_PRECONDITION:
            assert (row, tombstones, cancelled) == (None, 1, order_pb2.CancelOrderResponse())
        else:
            assert (str(row["id"]), row["status"], tombstones) == (created.order.order_id, "CANCELLED", 0)
            assert (cancelled.order_id, cancelled.status) == (created.order.order_id, order_pb2.ORDER_STATUS_CANCELLED)


@dataclass
class _Ledger:
    """What the calls answered, to hold against what the database holds."""

    prefix: str
    created: dict[int, str] = field(default_factory=dict)
    refused_creates: set[int] = field(default_factory=set)
    cancelled: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    confirmed: set[int] = field(default_factory=set)
    responses: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))

    def key(self, kind: str, action: int, op: int = 0) -> str:
        return f"{self.prefix}-{kind}-{action}-{op}"


def _total(action: int) -> Decimal:
    return Decimal("1.25") * (action + 1) + Decimal("0.10")


def _create(service: Any, ledger: _Ledger, action: int) -> Any:
    items = [
        order_pb2.OrderItem(sku="A", quantity=action + 1, unit_price="1.25"),
        order_pb2.OrderItem(sku="B", quantity=1, unit_price="0.10"),
    ]
    saga = str(uuid.uuid5(uuid.NAMESPACE_URL, ledger.key("saga", action)))
    request = service.requests.create(ledger.key("create", action), saga, items=items)
    return service.stub.CreateOrder(request), request.idempotency_key


async def _run(service: Any, ledger: _Ledger, op: tuple[str, int, int]) -> None:
    kind, action, op_key = op
    if kind == "create":
        call, key = _create(service, ledger, action)
    elif kind == "cancel":
        key = ledger.key("cancel", action, op_key)
        call = service.stub.CancelOrder(service.requests.cancel(ledger.key("create", action), key))
    elif action in ledger.created:
        key = ledger.key("confirm", action, op_key)
        call = service.stub.ConfirmOrder(service.requests.confirm(ledger.created[action], key))
    else:
        return
    _record(ledger, kind, action, key, await _outcome(call))


def _record(ledger: _Ledger, kind: str, action: int, key: str, outcome: Any) -> None:
    if isinstance(outcome, grpc.StatusCode):
        assert outcome == grpc.StatusCode.FAILED_PRECONDITION, (kind, outcome)
        if kind == "create":
            ledger.refused_creates.add(action)
        return
    ledger.responses[key].add(outcome.SerializeToString())
    if kind == "create":
        ledger.created[action] = outcome.order.order_id
    elif kind == "cancel":
        ledger.cancelled[action].add(outcome.order_id)
    else:
        ledger.confirmed.add(action)


async def _check(service: Any, ledger: _Ledger) -> None:
    assert all(len(answers) == 1 for answers in ledger.responses.values()), "a key answered differently"
    rows = await service.db.fetch("SELECT * FROM orders WHERE idempotency_key LIKE $1", f"{ledger.prefix}-%")
    by_action = {int(row["idempotency_key"].split("-")[-2]): row for row in rows}
    assert set(by_action) == set(ledger.created)
    assert ledger.refused_creates.isdisjoint(ledger.created)
    for action, row in by_action.items():
        assert str(row["id"]) == ledger.created[action]
        cancelled = str(row["id"]) in ledger.cancelled[action]
        assert not (action in ledger.confirmed and cancelled)
        expected = "CONFIRMED" if action in ledger.confirmed else "CANCELLED" if cancelled else "CREATED"
        assert row["status"] == expected
    tombstones = await service.db.fetch(
        "SELECT action_idempotency_key FROM order_tombstones WHERE action_idempotency_key LIKE $1", f"{ledger.prefix}-%"
    )
    assert {int(t[0].split("-")[-2]) for t in tombstones} == {a for a, ids in ledger.cancelled.items() if "" in ids}
    # Money is conserved: every stored total is the exact sum of its lines, once per created order.
    assert sum((row["total_amount"] for row in rows), Decimal(0)) == sum(
        (_total(a) for a in ledger.created), Decimal(0)
    )


OPERATIONS = st.tuples(
    st.sampled_from(["create", "cancel", "confirm"]),
    st.integers(0, ACTION_KEYS - 1),
    st.integers(0, OP_KEYS - 1),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(OPERATIONS, min_size=1, max_size=6), min_size=1, max_size=4))
async def test_random_interleavings_keep_orders_consistent_and_money_conserved(
    service: Any, batches: list[list[tuple[str, int, int]]]
) -> None:
    ledger = _Ledger(prefix=uuid.uuid4().hex)
    for batch in batches:
        await asyncio.gather(*(_run(service, ledger, op) for op in batch))
    await _check(service, ledger)
