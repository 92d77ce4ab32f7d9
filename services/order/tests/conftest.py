"""A small behavioural fake of the order store, shared by the unit tests and the store contract test.

It keeps the semantics the use cases rely on: a transaction commits all its writes or none, transactions
are serialized (stricter than the per-key locks of PostgreSQL, never weaker), unique keys are unique,
and a status change names the status it moves from.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from order_service import domain


@dataclass
class _State:
    orders: dict[uuid.UUID, domain.Order] = field(default_factory=dict)
    receipts: dict[tuple[domain.Operation, str], domain.Receipt] = field(default_factory=dict)
    tombstones: dict[str, domain.Tombstone] = field(default_factory=dict)


class FakeTransaction:
    def __init__(self, state: _State) -> None:
        self.state = state
        self.locks: list[tuple[domain.Operation, str]] = []

    def fail(self, method: str, error: Exception) -> None:
        async def failing(*args: object) -> None:
            raise error

        setattr(self, method, failing)

    async def lock(self, operation: domain.Operation, key: str) -> None:
        self.locks.append((operation, key))

    async def order_by_id(self, order_id: uuid.UUID) -> domain.Order | None:
        return self.state.orders.get(order_id)

    async def order_by_key(self, idempotency_key: str) -> domain.Order | None:
        return next((o for o in self.state.orders.values() if o.idempotency_key == idempotency_key), None)

    async def add_order(self, order: domain.Order) -> None:
        if order.id in self.state.orders or await self.order_by_key(order.idempotency_key) is not None:
            raise ValueError("duplicate order")
        self.state.orders[order.id] = order

    async def change_status(self, order_id: uuid.UUID, before: domain.OrderStatus, after: domain.OrderStatus) -> None:
        order = self.state.orders.get(order_id)
        if order is None or order.status is not before:
            raise RuntimeError(f"order {order_id} was not {before}")
        self.state.orders[order_id] = order.as_of(after)

    async def receipt(self, operation: domain.Operation, idempotency_key: str) -> domain.Receipt | None:
        return self.state.receipts.get((operation, idempotency_key))

    async def add_receipt(self, receipt: domain.Receipt) -> None:
        key = (receipt.operation, receipt.idempotency_key)
        if key in self.state.receipts:
            raise ValueError("duplicate receipt")
        self.state.receipts[key] = receipt

    async def has_tombstone(self, action_key: str) -> bool:
        return action_key in self.state.tombstones

    async def add_tombstone(self, tombstone: domain.Tombstone) -> None:
        self.state.tombstones.setdefault(tombstone.action_key, tombstone)


class FakeOrderStore:
    def __init__(self) -> None:
        self.state = _State()
        self.transactions: list[FakeTransaction] = []
        self._serial = asyncio.Lock()
        self._fault: tuple[str, Exception] | None = None

    def fail_next(self, method: str, error: Exception) -> None:
        """Make method raise error in the next transaction, as a lost connection would."""
        self._fault = (method, error)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTransaction]:
        async with self._serial:
            tx = FakeTransaction(copy.deepcopy(self.state))
            self.transactions.append(tx)
            if self._fault is not None:
                tx.fail(*self._fault)
                self._fault = None
            yield tx
            self.state = tx.state

    async def create_if_new(self, order: domain.Order) -> bool:
        # The port allows a store to always decide through a transaction; this fake does, so the unit
        # tests exercise the general path (the database's fast paths are tested against PostgreSQL).
        return False

    async def confirm_if_new(self, key: str, saga_id: uuid.UUID, order_id: uuid.UUID) -> domain.Order | None:
        return None

    async def cancel_if_new(self, key: str, saga_id: uuid.UUID, action_key: str) -> tuple[bool, domain.Order | None]:
        return False, None

    async def get(self, order_id: uuid.UUID) -> domain.Order | None:
        return self.state.orders.get(order_id)


@pytest.fixture
def fake_store() -> FakeOrderStore:
    return FakeOrderStore()
