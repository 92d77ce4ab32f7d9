"""The inventory's use cases: reserve stock, release it (compensation), read a reservation.

Idempotency rests on the store's per-key lock (see `ports`): inside it, "look up the key, then act" is
not a race, because every writer for that key waits for the lock first; the unique constraints of the
tables back it up. A business decline (unknown SKU, short stock) rolls back and records nothing, so the
same key may succeed later if stock arrives. That is safe because the orchestrator compensates a
declined step at once, and the compensation tombstones the key; recording declines would only cost a
commit per decline for no guarantee the tombstone does not already give.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from inventory_service import domain, ports
from servicekit import failpoints, logging

log = logging.get_logger(__name__)


class Inventory:
    """The inventory participant's operations, over any `ports.InventoryStore`."""

    def __init__(self, store: ports.InventoryStore, new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        """Use store for state and new_id to name new reservations."""
        self._store = store
        self._new_id = new_id

    async def reserve(self, request: domain.ReserveRequest) -> domain.Reservation:
        """Reserve every line of request, all or nothing; a repeated key returns the original reservation.

        Raises:
            domain.NotFound: a SKU is not stocked.
            domain.OutOfStock: a SKU is short; nothing was reserved.
            domain.Tombstoned: the key was compensated before this call.
            domain.Conflict: the key was already used for a different reservation.
        """
        if failpoints.armed():  # a poison SKU for the fault battery: the service dies on it, every time
            for sku in request.skus:
                await failpoints.hit(f"inventory.reserve:{sku}")
        reservation_id = self._new_id()
        placed = domain.Reservation(reservation_id, request.idempotency_key, request.saga_id, request.lines)
        if await self._store.reserve_if_new(placed):
            log.debug("stock reserved", saga_id=str(request.saga_id), reservation_id=str(reservation_id))
            return placed
        async with self._store.action(request.idempotency_key) as session:
            existing = await session.find_reservation(request.idempotency_key)
            if existing is not None:
                return existing.answers(request)
            if await session.find_release(request.idempotency_key) is not None:
                raise domain.Tombstoned(f"idempotency_key {request.idempotency_key} was already compensated")
            available = await session.lock_stock(request.skus)
            reservation = domain.Reservation.place(reservation_id, request, available)
            await session.add_reservation(reservation)
        log.debug("stock reserved", saga_id=str(request.saga_id), reservation_id=str(reservation.id))
        return reservation

    async def release(self, request: domain.ReleaseRequest) -> domain.Release:
        """Undo the reservation placed with request's action key, exactly once, or tombstone that key.

        Repeating a release (with any release key) has no further effect and returns the first outcome.

        Raises:
            domain.Conflict: the action key belongs to another saga, or the release key was used for
                another action key.
        """
        async with self._store.action(request.action_idempotency_key) as session:
            existing = await session.find_release(request.action_idempotency_key)
            if existing is not None:
                return existing.answers(request)
            reservation = await session.find_reservation(request.action_idempotency_key)
            release = domain.Release.of(request, reservation)
            if reservation is not None:
                released = reservation.transition_to(domain.ReservationStatus.RELEASED)
                await session.lock_stock([line.sku for line in released.lines])
                await session.release_reservation(released)
            await session.add_release(release)
        log.debug(
            "stock released" if reservation is not None else "reservation tombstoned",
            saga_id=str(request.saga_id),
            action_idempotency_key=request.action_idempotency_key,
            reason=request.reason,
        )
        return release

    async def get(self, reservation_id: uuid.UUID) -> domain.Reservation:
        """The reservation with reservation_id, in its current status.

        Raises:
            domain.NotFound: there is no such reservation.
        """
        reservation = await self._store.get_reservation(reservation_id)
        if reservation is None:
            raise domain.NotFound(f"reservation {reservation_id} not found")
        return reservation
