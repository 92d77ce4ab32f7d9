"""What the inventory use cases need from the outside world: a store of stock, reservations and releases.

Every change happens inside `InventoryStore.action(key)`: one transaction that holds an exclusive lock
on one action idempotency key until it commits. ReserveStock takes it for its own key, ReleaseStock for
the key of the action it undoes, so an action and its compensation (and any duplicate of either) run one
after the other, never interleaved. Leaving the block normally commits; an exception rolls everything back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from inventory_service import domain


class ActionSession(Protocol):
    """Reads and writes inside one transaction that holds the lock on one action key."""

    async def find_reservation(self, idempotency_key: str) -> domain.Reservation | None:
        """The reservation placed with idempotency_key, in its current status, or None."""
        ...

    async def find_release(self, action_idempotency_key: str) -> domain.Release | None:
        """The release (or tombstone) recorded for action_idempotency_key, or None."""
        ...

    async def lock_stock(self, skus: Sequence[str]) -> dict[str, int]:
        """Lock the stock rows of skus in SKU order until commit; returns units available per known SKU.

        SKUs that are not stocked are absent from the result.
        """
        ...

    async def add_reservation(self, reservation: domain.Reservation) -> None:
        """Store a new RESERVED reservation and move its quantities from available to reserved.

        The caller has locked the reservation's stock rows and checked availability.
        """
        ...

    async def release_reservation(self, reservation: domain.Reservation) -> None:
        """Mark reservation RELEASED and move its quantities from reserved back to available.

        The caller has locked the reservation's stock rows.
        """
        ...

    async def add_release(self, release: domain.Release) -> None:
        """Record release, which also tombstones its action key when it released nothing.

        Raises:
            domain.Conflict: the release's own idempotency key already recorded a different release.
        """
        ...


class InventoryStore(Protocol):
    """The transactional store behind the use cases."""

    def action(self, action_idempotency_key: str) -> AbstractAsyncContextManager[ActionSession]:
        """A transaction holding the exclusive lock on action_idempotency_key; commits on normal exit."""
        ...

    async def reserve_if_new(self, reservation: domain.Reservation) -> bool:
        """Place reservation at once if its key has no history and the stock suffices; else change nothing.

        False means "decide through `action`": a store may always answer False.
        """
        ...

    async def get_reservation(self, reservation_id: uuid.UUID) -> domain.Reservation | None:
        """The reservation with reservation_id in its current status, or None."""
        ...
