"""The order store on PostgreSQL (asyncpg): the implementation of `ports.OrderStore`.

Transactions run at READ COMMITTED. The use cases take a transaction-scoped advisory lock before they
read, and each later statement takes a fresh snapshot, so whoever held the lock before is fully visible.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

from order_service import domain
from servicekit import failpoints

# Serializes every transaction that locks the same (operation, key) until the holder commits or rolls
# back. A 64-bit hash of the name: a collision only makes two unrelated keys wait for each other.
LOCK_KEY: Final = "SELECT pg_advisory_xact_lock(hashtextextended('order:' || $1 || ':' || $2, 0))"

# One order with its lines in request order, read as parallel arrays in a single round trip; the three
# statements below add only how the order is found and whether it is locked.
_ORDER_WITH_LINES: Final = """
SELECT o.id, o.saga_id, o.idempotency_key, o.customer_id, o.status, o.total_amount, o.currency,
       ARRAY(SELECT i.sku FROM order_items i WHERE i.order_id = o.id ORDER BY i.line_no) AS skus,
       ARRAY(SELECT i.quantity FROM order_items i WHERE i.order_id = o.id ORDER BY i.line_no) AS quantities,
       ARRAY(SELECT i.unit_price FROM order_items i WHERE i.order_id = o.id ORDER BY i.line_no) AS prices
FROM orders o"""

# By id, row-locked so a confirmation and a cancellation of the order serialize.
SELECT_ORDER_BY_ID_FOR_UPDATE: Final = _ORDER_WITH_LINES + "\nWHERE o.id = $1\nFOR UPDATE OF o"

# By the CreateOrder key (unique), row-locked.
SELECT_ORDER_BY_KEY_FOR_UPDATE: Final = _ORDER_WITH_LINES + "\nWHERE o.idempotency_key = $1\nFOR UPDATE OF o"

# For reads outside a transaction: no lock, a consistent snapshot of one statement.
SELECT_ORDER_BY_ID: Final = _ORDER_WITH_LINES + "\nWHERE o.id = $1"

# The order and all its lines in one statement: either all of them exist or none. The lines' foreign
# key is checked at the end of the statement, after the order row is in. A second order with the same
# idempotency key violates the unique constraint (the lock should make that impossible).
INSERT_ORDER: Final = """
WITH new_order AS (
    INSERT INTO orders (id, saga_id, idempotency_key, customer_id, status, total_amount, currency)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
)
INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price)
SELECT $1, line.line_no, line.sku, line.quantity, line.unit_price
FROM unnest($8::text[], $9::integer[], $10::numeric[]) WITH ORDINALITY AS line (sku, quantity, unit_price, line_no)
"""

# Moves the status only from the expected one: zero rows updated means the state machine was bypassed.
UPDATE_STATUS: Final = """
UPDATE orders SET status = $3, updated_at = clock_timestamp()
WHERE id = $1 AND status = $2
"""

# The recorded outcome of a ConfirmOrder or CancelOrder key, if any.
SELECT_RECEIPT: Final = """
SELECT operation, idempotency_key, saga_id, target, order_id
FROM order_receipts
WHERE operation = $1 AND idempotency_key = $2
"""

# Records an outcome; the primary key refuses a second outcome for the same key.
INSERT_RECEIPT: Final = """
INSERT INTO order_receipts (operation, idempotency_key, saga_id, target, order_id)
VALUES ($1, $2, $3, $4, $5)
"""

# Whether a cancellation already forbade this CreateOrder key.
SELECT_TOMBSTONE: Final = "SELECT EXISTS (SELECT 1 FROM order_tombstones WHERE action_idempotency_key = $1)"

# The first tombstone for an action key wins; later cancellations with other keys change nothing.
INSERT_TOMBSTONE: Final = """
INSERT INTO order_tombstones (action_idempotency_key, saga_id, cancel_idempotency_key)
VALUES ($1, $2, $3)
ON CONFLICT (action_idempotency_key) DO NOTHING
"""


# The common cases in one round trip each (migration 0002); false / no row when the general path must decide.
CREATE_IF_NEW: Final = "SELECT order_create_if_new($1, $2, $3, $4, $5, $6, $7, $8, $9)"
CONFIRM_IF_NEW: Final = "SELECT * FROM order_confirm_if_new($1, $2, $3)"
CANCEL_IF_NEW: Final = "SELECT * FROM order_cancel_if_new($1, $2, $3)"


def _order(row: asyncpg.Record | None) -> domain.Order | None:
    if row is None:
        return None
    lines = tuple(
        domain.OrderLine(sku, quantity, price)
        for sku, quantity, price in zip(row["skus"], row["quantities"], row["prices"], strict=True)
    )
    return domain.Order(
        id=row["id"],
        saga_id=row["saga_id"],
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        status=domain.OrderStatus(row["status"]),
        total_amount=row["total_amount"],
        currency=row["currency"],
        lines=lines,
    )


class PostgresTransaction:
    """`ports.Transaction` on one connection inside an open transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def lock(self, operation: domain.Operation, key: str) -> None:
        await self._connection.execute(LOCK_KEY, operation.value, key)

    async def order_by_id(self, order_id: uuid.UUID) -> domain.Order | None:
        return _order(await self._connection.fetchrow(SELECT_ORDER_BY_ID_FOR_UPDATE, order_id))

    async def order_by_key(self, idempotency_key: str) -> domain.Order | None:
        return _order(await self._connection.fetchrow(SELECT_ORDER_BY_KEY_FOR_UPDATE, idempotency_key))

    async def add_order(self, order: domain.Order) -> None:
        await self._connection.execute(INSERT_ORDER, *_order_arguments(order))

    async def change_status(self, order_id: uuid.UUID, before: domain.OrderStatus, after: domain.OrderStatus) -> None:
        result = await self._connection.execute(UPDATE_STATUS, order_id, before.value, after.value)
        if result != "UPDATE 1":
            raise RuntimeError(f"order {order_id} was not {before} when moving it to {after}")

    async def receipt(self, operation: domain.Operation, idempotency_key: str) -> domain.Receipt | None:
        row = await self._connection.fetchrow(SELECT_RECEIPT, operation.value, idempotency_key)
        if row is None:
            return None
        return domain.Receipt(
            domain.Operation(row["operation"]), row["idempotency_key"], row["saga_id"], row["target"], row["order_id"]
        )

    async def add_receipt(self, receipt: domain.Receipt) -> None:
        await self._connection.execute(
            INSERT_RECEIPT,
            receipt.operation.value,
            receipt.idempotency_key,
            receipt.saga_id,
            receipt.target,
            receipt.order_id,
        )

    async def has_tombstone(self, action_key: str) -> bool:
        return bool(await self._connection.fetchval(SELECT_TOMBSTONE, action_key))

    async def add_tombstone(self, tombstone: domain.Tombstone) -> None:
        await self._connection.execute(INSERT_TOMBSTONE, tombstone.action_key, tombstone.saga_id, tombstone.cancel_key)


def _order_arguments(order: domain.Order) -> tuple[Any, ...]:
    return (
        order.id,
        order.saga_id,
        order.idempotency_key,
        order.customer_id,
        order.status.value,
        order.total_amount,
        order.currency,
        [line.sku for line in order.lines],
        [line.quantity for line in order.lines],
        [line.unit_price for line in order.lines],
    )


class PostgresOrderStore:
    """`ports.OrderStore` on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A connection from the pool with a transaction open: commit on exit, roll back on error."""
        async with self._pool.acquire() as connection:
            async with connection.transaction():
                yield PostgresTransaction(connection)
                await failpoints.hit("order.before_commit")
            await failpoints.hit("order.after_commit")

    async def create_if_new(self, order: domain.Order) -> bool:
        # One statement is its own transaction: "before commit" is before it leaves, "after" once it has.
        await failpoints.hit("order.before_commit")
        created = await self._pool.fetchval(
            CREATE_IF_NEW, order.idempotency_key, order.id, order.saga_id, order.customer_id, order.total_amount,
            order.currency, [line.sku for line in order.lines], [line.quantity for line in order.lines],
            [line.unit_price for line in order.lines],
        )  # fmt: skip
        await failpoints.hit("order.after_commit")
        return bool(created)

    async def confirm_if_new(self, key: str, saga_id: uuid.UUID, order_id: uuid.UUID) -> domain.Order | None:
        await failpoints.hit("order.before_commit")
        confirmed = _order(await self._pool.fetchrow(CONFIRM_IF_NEW, key, saga_id, order_id))
        await failpoints.hit("order.after_commit")
        return confirmed

    async def cancel_if_new(self, key: str, saga_id: uuid.UUID, action_key: str) -> tuple[bool, domain.Order | None]:
        await failpoints.hit("order.before_commit")
        row = await self._pool.fetchrow(CANCEL_IF_NEW, key, saga_id, action_key)
        await failpoints.hit("order.after_commit")
        if row is None:
            return False, None
        return True, (_order(row) if row["outcome"] == "cancelled" else None)

    async def get(self, order_id: uuid.UUID) -> domain.Order | None:
        return _order(await self._pool.fetchrow(SELECT_ORDER_BY_ID, order_id))
