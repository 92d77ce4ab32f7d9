"""What the use cases need from storage, as protocols; adapters/postgres.py is the real implementation.

A `Transaction` is one atomic unit: everything done through it commits together or not at all.
`lock` is what makes idempotency hold under concurrency: two transactions locking the same name run
one after the other, and the second sees everything the first committed.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from order_service import domain


class Transaction(Protocol):
    """Reads and writes inside one database transaction."""

    async def lock(self, operation: domain.Operation, key: str) -> None:
        """Block until no other transaction holds (operation, key); held until this one ends."""

    async def order_by_id(self, order_id: uuid.UUID) -> domain.Order | None:
        """The order with that id, row-locked until the transaction ends; None if there is none."""

    async def order_by_key(self, idempotency_key: str) -> domain.Order | None:
        """The order created with that CreateOrder key, row-locked; None if there is none."""

    async def add_order(self, order: domain.Order) -> None:
        """Insert a new order with its lines."""

    async def change_status(self, order_id: uuid.UUID, before: domain.OrderStatus, after: domain.OrderStatus) -> None:
        """Move the order from before to after; the caller has checked the transition."""

    async def receipt(self, operation: domain.Operation, idempotency_key: str) -> domain.Receipt | None:
        """The receipt recorded under (operation, key), if any."""

    async def add_receipt(self, receipt: domain.Receipt) -> None:
        """Record a completed operation under its idempotency key."""

    async def has_tombstone(self, action_key: str) -> bool:
        """True when a cancellation already forbade the CreateOrder with that key."""

    async def add_tombstone(self, tombstone: domain.Tombstone) -> None:
        """Forbid the CreateOrder with `tombstone.action_key`; a second tombstone for it changes nothing."""


class OrderStore(Protocol):
    """The order database."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Open a transaction: commit when the block exits normally, roll back when it raises."""

    async def create_if_new(self, order: domain.Order) -> bool:
        """Store a new CREATED order at once if its key has no order and no tombstone; else change nothing.

        False means "decide through a transaction": a store may always answer False.
        """
        ...

    async def confirm_if_new(self, key: str, saga_id: uuid.UUID, order_id: uuid.UUID) -> domain.Order | None:
        """Confirm a CREATED order under a key with no receipt, recording it, and answer the order; else None.

        None means "decide through a transaction": a store may always answer None.
        """
        ...

    async def cancel_if_new(self, key: str, saga_id: uuid.UUID, action_key: str) -> tuple[bool, domain.Order | None]:
        """Under a key with no receipt, cancel the CREATED order of action_key, or tombstone a key with no order.

        Answers (True, the cancelled order) or (True, None) for a tombstone, recording the receipt; (False,
        None) changes nothing and means "decide through a transaction": a store may always answer that.
        """
        ...

    async def get(self, order_id: uuid.UUID) -> domain.Order | None:
        """The order with that id, without locking; None if there is none."""
