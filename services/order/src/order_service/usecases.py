"""The order service's use cases: create, confirm, cancel (the compensation of create) and read orders.

Idempotency, and why it holds under concurrency:
- Every mutating use case runs in one transaction that first takes a lock on its idempotency key, then
  looks for the recorded outcome, and only then acts. Concurrent duplicates therefore run one after the
  other and all but the first replay what the first recorded. The unique constraints on `orders` and
  `order_receipts` are the backstop, never the mechanism.
- CreateOrder and CancelOrder both lock the CreateOrder key (the cancellation's `action_idempotency_key`),
  so an action and its compensation racing each other serialize: either the order exists and is
  cancelled, or the cancellation leaves a tombstone and the late CreateOrder is refused.
- ConfirmOrder and CancelOrder both row-lock the order, so a confirmation and a cancellation never both
  win.

Declines (`domain.RefusedError`, `domain.NotFoundError`) persist nothing and are not recorded: a retry with the same
key is decided again from the current state. For orders that state never comes back (CONFIRMED and
CANCELLED are final, tombstones are permanent), so a declined key keeps declining, and storing the
decline would only cost a commit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from order_service import domain, ports
from servicekit import logging

log = logging.get_logger(__name__)


@dataclass(frozen=True)
class ItemInput:
    """One requested line, as received."""

    sku: str
    quantity: int
    unit_price: str


@dataclass(frozen=True)
class CreateOrder:
    """A CreateOrder request, as received (validated by the use case)."""

    idempotency_key: str
    saga_id: str
    customer_id: str
    currency: str
    items: tuple[ItemInput, ...]


@dataclass(frozen=True)
class ConfirmOrder:
    """A ConfirmOrder request, as received."""

    idempotency_key: str
    saga_id: str
    order_id: str


@dataclass(frozen=True)
class CancelOrder:
    """A CancelOrder request, as received; `action_key` is the key of the CreateOrder it undoes."""

    idempotency_key: str
    saga_id: str
    action_key: str


def parse_draft(command: CreateOrder) -> domain.OrderDraft:
    """Validate a CreateOrder request into a draft order.

    Raises:
        domain.InvalidRequestError: any field is missing or malformed.
    """
    return domain.OrderDraft(
        idempotency_key=domain.parse_key(command.idempotency_key),
        saga_id=domain.parse_uuid(command.saga_id, "saga_id"),
        customer_id=domain.parse_uuid(command.customer_id, "customer_id"),
        currency=domain.parse_currency(command.currency),
        lines=tuple(
            domain.OrderLine.parse(item.sku, item.quantity, item.unit_price, position)
            for position, item in enumerate(command.items)
        ),
    )


class Orders:
    """The use cases, over an order store and an id generator (injected so tests can fix ids)."""

    def __init__(self, store: ports.OrderStore, new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        """Serve orders from store; new orders get ids from new_id."""
        self._store = store
        self._new_id = new_id

    async def create(self, command: CreateOrder) -> domain.Order:
        """Create a CREATED order, or return the order this key already created (as it was created).

        Raises:
            domain.InvalidRequestError: the request is malformed.
            domain.TombstonedError: a cancellation for this key arrived first.
            domain.KeyReusedError: the key already created a different order.
        """
        draft = parse_draft(command)
        order = domain.Order.place(self._new_id(), draft)
        if await self._store.create_if_new(order):
            log.debug(
                "order created", saga_id=str(order.saga_id), order_id=str(order.id), total=str(order.total_amount)
            )
            return order
        async with self._store.transaction() as tx:
            await tx.lock(domain.Operation.CREATE, draft.idempotency_key)
            existing = await tx.order_by_key(draft.idempotency_key)
            if existing is not None:
                if not existing.placed_by(draft):
                    raise domain.KeyReusedError(f"idempotency key {draft.idempotency_key!r} created a different order")
                return existing.as_of(domain.OrderStatus.CREATED)
            if await tx.has_tombstone(draft.idempotency_key):
                raise domain.TombstonedError(f"order {draft.idempotency_key!r} was cancelled before it was created")
            await tx.add_order(order)
        log.debug("order created", saga_id=str(order.saga_id), order_id=str(order.id), total=str(order.total_amount))
        return order

    async def confirm(self, command: ConfirmOrder) -> domain.Order:
        """Confirm a CREATED order; a CONFIRMED one is returned as it is.

        Raises:
            domain.InvalidRequestError: the request is malformed.
            domain.NotFoundError: there is no such order.
            domain.IllegalTransitionError: the order is CANCELLED.
            domain.KeyReusedError: the key already confirmed another order or belongs to another saga.
        """
        key = domain.parse_key(command.idempotency_key)
        saga_id = domain.parse_uuid(command.saga_id, "saga_id")
        order_id = domain.parse_uuid(command.order_id, "order_id")
        fast = await self._store.confirm_if_new(key, saga_id, order_id)
        if fast is not None:
            log.debug("order confirmed", saga_id=str(saga_id), order_id=str(order_id))
            return fast
        async with self._store.transaction() as tx:
            await tx.lock(domain.Operation.CONFIRM, key)
            receipt = await tx.receipt(domain.Operation.CONFIRM, key)
            if receipt is not None:
                receipt.check_replay(saga_id, str(order_id))
                return await _replayed(tx, order_id, receipt.result_status)
            order = await tx.order_by_id(order_id)
            if order is None:
                raise domain.NotFoundError(f"no order {order_id}")
            confirmed = await _moved(tx, order, order.confirm())
            await tx.add_receipt(domain.Receipt(domain.Operation.CONFIRM, key, saga_id, str(order_id), order.id))
        log.debug("order confirmed", saga_id=str(saga_id), order_id=str(order_id))
        return confirmed

    async def cancel(self, command: CancelOrder) -> domain.Order | None:
        """Cancel the order the action key created; without one, leave a tombstone and return None.

        Raises:
            domain.InvalidRequestError: the request is malformed.
            domain.IllegalTransitionError: the order is CONFIRMED, which is final.
            domain.KeyReusedError: the key already cancelled another action or belongs to another saga.
        """
        key = domain.parse_key(command.idempotency_key)
        saga_id = domain.parse_uuid(command.saga_id, "saga_id")
        action_key = domain.parse_key(command.action_key, "action_idempotency_key")
        taken, cancelled = await self._store.cancel_if_new(key, saga_id, action_key)
        if not taken:
            cancelled = await self._cancel(key, saga_id, action_key)
        if cancelled is None:
            log.debug("order cancelled before it was created, tombstone left", saga_id=str(saga_id))
        else:
            log.debug("order cancelled", saga_id=str(saga_id), order_id=str(cancelled.id))
        return cancelled

    async def _cancel(self, key: str, saga_id: uuid.UUID, action_key: str) -> domain.Order | None:
        async with self._store.transaction() as tx:
            # Always this order (own key, then action key): no two use cases wait on each other in a cycle.
            await tx.lock(domain.Operation.CANCEL, key)
            await tx.lock(domain.Operation.CREATE, action_key)
            receipt = await tx.receipt(domain.Operation.CANCEL, key)
            if receipt is not None:
                receipt.check_replay(saga_id, action_key)
                if receipt.order_id is None:
                    return None
                return await _replayed(tx, receipt.order_id, receipt.result_status)
            pending = domain.Receipt(domain.Operation.CANCEL, key, saga_id, action_key, order_id=None)
            return await _cancel_action(tx, pending)

    async def get(self, order_id: str) -> domain.Order:
        """The order with that id.

        Raises:
            domain.InvalidRequestError: order_id is not a UUID.
            domain.NotFoundError: there is no such order.
        """
        parsed = domain.parse_uuid(order_id, "order_id")
        order = await self._store.get(parsed)
        if order is None:
            raise domain.NotFoundError(f"no order {parsed}")
        return order


async def _cancel_action(tx: ports.Transaction, receipt: domain.Receipt) -> domain.Order | None:
    order = await tx.order_by_key(receipt.target)
    if order is None:
        await tx.add_tombstone(domain.Tombstone(receipt.target, receipt.saga_id, receipt.idempotency_key))
        await tx.add_receipt(receipt)
        return None
    cancelled = await _moved(tx, order, order.cancel())
    await tx.add_receipt(dataclasses.replace(receipt, order_id=order.id))
    return cancelled


async def _moved(tx: ports.Transaction, before: domain.Order, after: domain.Order) -> domain.Order:
    if after.status is not before.status:
        await tx.change_status(before.id, before.status, after.status)
    return after


async def _replayed(tx: ports.Transaction, order_id: uuid.UUID, status: domain.OrderStatus) -> domain.Order:
    # Orders are never deleted and only their status changes, so the order as of the recorded status
    # is the original response, field for field.
    order = await tx.order_by_id(order_id)
    if order is None:
        raise RuntimeError(f"a receipt names order {order_id}, which does not exist")
    return order.as_of(status)
