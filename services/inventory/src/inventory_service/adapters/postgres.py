"""The inventory store on PostgreSQL (asyncpg): the `ports.InventoryStore` the use cases run on.

Locks, in the order a transaction takes them: first the advisory lock on its action key (so an action,
its compensation and their duplicates serialize), then the stock rows it touches, in SKU order (so two
reservations of overlapping SKUs queue instead of deadlocking). Stock rows stay locked until commit,
which is what makes "check available, then subtract" safe under any concurrency; the CHECK constraints
of `stock` would reject an oversell even if that reasoning were wrong.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg

from inventory_service import domain, ports
from servicekit import failpoints

# Serializes every transaction about one action idempotency key (a ReserveStock with that key, or a
# ReleaseStock undoing it) until commit or rollback. It must be a statement of its own, the first of the
# transaction: under READ COMMITTED each statement reads from a snapshot taken when it starts, so only
# statements issued after the lock is granted see what the previous holder committed. A 64-bit hash
# collision only serializes two unrelated keys; it never merges their effects.
_LOCK_ACTION_KEY: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

# The reservation placed with one idempotency key, with its items (at most one: the key is unique).
_FIND_RESERVATION_BY_KEY: Final = """
SELECT r.id, r.idempotency_key, r.saga_id, r.status,
       array_agg(i.sku) AS skus, array_agg(i.quantity) AS quantities
FROM reservations AS r
JOIN reservation_items AS i ON i.reservation_id = r.id
WHERE r.idempotency_key = $1
GROUP BY r.id"""

# The reservation with one id, with its items; a plain read, it locks nothing.
_FIND_RESERVATION_BY_ID: Final = """
SELECT r.id, r.idempotency_key, r.saga_id, r.status,
       array_agg(i.sku) AS skus, array_agg(i.quantity) AS quantities
FROM reservations AS r
JOIN reservation_items AS i ON i.reservation_id = r.id
WHERE r.id = $1
GROUP BY r.id"""

# The release or tombstone recorded for one action key (the primary key: at most one).
_FIND_RELEASE: Final = """
SELECT action_idempotency_key, idempotency_key, saga_id, reservation_id, reason
FROM releases
WHERE action_idempotency_key = $1"""

# Locks the named stock rows until commit, in SKU order: every transaction that locks several rows
# does so through this statement, so lock waits can never form a cycle.
_LOCK_STOCK: Final = """
SELECT sku, available
FROM stock
WHERE sku = ANY($1::text[])
ORDER BY sku
FOR UPDATE"""

# One statement: move the quantities from available to reserved and record the reservation with its
# items. The rows are already locked and checked; `stock`'s CHECK constraints still refuse an oversell.
_ADD_RESERVATION: Final = """
WITH moved AS (
    UPDATE stock
    SET available = stock.available - item.quantity, reserved = stock.reserved + item.quantity
    FROM unnest($4::text[], $5::integer[]) AS item(sku, quantity)
    WHERE stock.sku = item.sku
    RETURNING stock.sku
), placed AS (
    INSERT INTO reservations (id, saga_id, idempotency_key, status)
    VALUES ($1, $2, $3, 'RESERVED')
    RETURNING id
)
INSERT INTO reservation_items (reservation_id, sku, quantity)
SELECT placed.id, item.sku, item.quantity
FROM placed, unnest($4::text[], $5::integer[]) AS item(sku, quantity)"""

# One statement: RESERVED -> RELEASED and the stored quantities back from reserved to available. The
# status guard makes it a no-op on an already released reservation, so stock can never return twice.
_RELEASE_RESERVATION: Final = """
WITH released AS (
    UPDATE reservations
    SET status = 'RELEASED', released_at = clock_timestamp()
    WHERE id = $1 AND status = 'RESERVED'
    RETURNING id
)
UPDATE stock
SET available = stock.available + item.quantity, reserved = stock.reserved - item.quantity
FROM reservation_items AS item
JOIN released ON released.id = item.reservation_id
WHERE stock.sku = item.sku"""

# Records a release; `reservation_id` NULL is a tombstone. The primary key (action key) and the unique
# release key make a second record for either impossible.
_ADD_RELEASE: Final = """
INSERT INTO releases (action_idempotency_key, idempotency_key, saga_id, reservation_id, reason)
VALUES ($1, $2, $3, $4, $5)"""

# Demo and benchmark stock: creates missing SKUs with `initial = available`, never touches existing rows.
_SEED_STOCK: Final = """
INSERT INTO stock (sku, available, reserved, initial)
SELECT sku, available, 0, available
FROM unnest($1::text[], $2::integer[]) AS seed(sku, available)
ON CONFLICT (sku) DO NOTHING"""

# Current availability of the named SKUs.
_STOCK_LEVELS: Final = "SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku"

# The whole reservation in one round trip when the key is new and the stock suffices (migration 0002);
# false when the general path must decide.
_RESERVE_IF_NEW: Final = "SELECT inventory_reserve_if_new($1, $2, $3, $4, $5)"

_RELEASE_KEY_CONSTRAINT: Final = "releases_idempotency_key_key"


def _uuid(value: Any) -> uuid.UUID:
    # asyncpg has its own UUID type; the domain compares and hashes the standard one.
    return uuid.UUID(bytes=value.bytes)


def _reservation(row: Mapping[str, Any]) -> domain.Reservation:
    lines = sorted(domain.Line(sku, quantity) for sku, quantity in zip(row["skus"], row["quantities"], strict=True))
    return domain.Reservation(
        id=_uuid(row["id"]),
        idempotency_key=row["idempotency_key"],
        saga_id=_uuid(row["saga_id"]),
        lines=tuple(lines),
        status=domain.ReservationStatus(row["status"]),
    )


def _release(row: Mapping[str, Any]) -> domain.Release:
    return domain.Release(
        action_idempotency_key=row["action_idempotency_key"],
        idempotency_key=row["idempotency_key"],
        saga_id=_uuid(row["saga_id"]),
        reservation_id=None if row["reservation_id"] is None else _uuid(row["reservation_id"]),
        reason=row["reason"],
    )


class _Session:
    """`ports.ActionSession` on one connection inside one transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def find_reservation(self, idempotency_key: str) -> domain.Reservation | None:
        row = await self._connection.fetchrow(_FIND_RESERVATION_BY_KEY, idempotency_key)
        return None if row is None else _reservation(row)

    async def find_release(self, action_idempotency_key: str) -> domain.Release | None:
        row = await self._connection.fetchrow(_FIND_RELEASE, action_idempotency_key)
        return None if row is None else _release(row)

    async def lock_stock(self, skus: Sequence[str]) -> dict[str, int]:
        rows = await self._connection.fetch(_LOCK_STOCK, list(skus))
        return {row["sku"]: row["available"] for row in rows}

    async def add_reservation(self, reservation: domain.Reservation) -> None:
        await self._connection.execute(
            _ADD_RESERVATION,
            reservation.id,
            reservation.saga_id,
            reservation.idempotency_key,
            [line.sku for line in reservation.lines],
            [line.quantity for line in reservation.lines],
        )

    async def release_reservation(self, reservation: domain.Reservation) -> None:
        await self._connection.execute(_RELEASE_RESERVATION, reservation.id)

    async def add_release(self, release: domain.Release) -> None:
        try:
            await self._connection.execute(
                _ADD_RELEASE,
                release.action_idempotency_key,
                release.idempotency_key,
                release.saga_id,
                release.reservation_id,
                release.reason,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _RELEASE_KEY_CONSTRAINT:
                raise
            raise domain.Conflict(f"idempotency_key {release.idempotency_key} already released another action") from exc


class PostgresInventory:
    """`ports.InventoryStore` on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def action(self, action_idempotency_key: str) -> AsyncIterator[ports.ActionSession]:
        async with self._pool.acquire() as connection:
            async with connection.transaction():
                await connection.execute(_LOCK_ACTION_KEY, action_idempotency_key)
                yield _Session(connection)
                await failpoints.hit("inventory.before_commit")
            await failpoints.hit("inventory.after_commit")

    async def reserve_if_new(self, reservation: domain.Reservation) -> bool:
        # One statement is its own transaction: "before commit" is before it leaves, "after" once it has.
        await failpoints.hit("inventory.before_commit")
        reserved = await self._pool.fetchval(
            _RESERVE_IF_NEW, reservation.idempotency_key, reservation.id, reservation.saga_id,
            [line.sku for line in reservation.lines], [line.quantity for line in reservation.lines],
        )  # fmt: skip
        await failpoints.hit("inventory.after_commit")
        return bool(reserved)

    async def get_reservation(self, reservation_id: uuid.UUID) -> domain.Reservation | None:
        row = await self._pool.fetchrow(_FIND_RESERVATION_BY_ID, reservation_id)
        return None if row is None else _reservation(row)


async def seed_stock(dsn: str, levels: Mapping[str, int]) -> list[tuple[str, int]]:
    """Create the SKUs of levels that do not exist yet; returns (sku, available now) for each, by SKU."""
    connection = await asyncpg.connect(dsn)
    try:
        skus = list(levels)
        await connection.execute(_SEED_STOCK, skus, [levels[sku] for sku in skus])
        rows: Iterable[Mapping[str, Any]] = await connection.fetch(_STOCK_LEVELS, skus)
        return [(row["sku"], row["available"]) for row in rows]
    finally:
        await connection.close()
