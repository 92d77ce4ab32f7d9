"""The inventory's test seams: an in-memory `ports.InventoryStore` that behaves like the PostgreSQL one.

The fake keeps the same guarantees the real store gives the use cases: one lock per action key held for
the whole transaction, rollback of every change when the block raises, stock that can never go negative,
and the unique release key. `test_inventory_store_contract.py` runs the same scenarios on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest

from inventory_service import domain


@dataclasses.dataclass
class StockLevel:
    available: int
    reserved: int = 0
    initial: int = 0


class FakeInventoryStore:
    def __init__(self, stock: Mapping[str, int]) -> None:
        self.stock = {sku: StockLevel(units, 0, units) for sku, units in stock.items()}
        self.reservations: dict[uuid.UUID, domain.Reservation] = {}
        self.releases: dict[str, domain.Release] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @contextlib.asynccontextmanager
    async def action(self, action_idempotency_key: str) -> AsyncIterator[FakeSession]:
        async with self._locks[action_idempotency_key]:
            # Nothing inside a transaction suspends (no session method awaits anything), so no other
            # transaction can commit between this snapshot and a rollback to it.
            saved = copy.deepcopy((self.stock, self.reservations, self.releases))
            try:
                yield FakeSession(self)
            except BaseException:
                self.stock, self.reservations, self.releases = saved
                raise

    async def reserve_if_new(self, reservation: domain.Reservation) -> bool:
        # The port allows a store to always decide through `action`; this fake does, so the unit tests
        # exercise the general path (the database's fast path is tested against PostgreSQL).
        return False

    async def get_reservation(self, reservation_id: uuid.UUID) -> domain.Reservation | None:
        return self.reservations.get(reservation_id)


class FakeSession:
    def __init__(self, store: FakeInventoryStore) -> None:
        self._store = store

    async def find_reservation(self, idempotency_key: str) -> domain.Reservation | None:
        found = [r for r in self._store.reservations.values() if r.idempotency_key == idempotency_key]
        return found[0] if found else None

    async def find_release(self, action_idempotency_key: str) -> domain.Release | None:
        return self._store.releases.get(action_idempotency_key)

    async def lock_stock(self, skus: Sequence[str]) -> dict[str, int]:
        return {sku: self._store.stock[sku].available for sku in skus if sku in self._store.stock}

    async def add_reservation(self, reservation: domain.Reservation) -> None:
        assert reservation.idempotency_key not in {r.idempotency_key for r in self._store.reservations.values()}
        self._move(reservation.lines, sign=1)
        self._store.reservations[reservation.id] = reservation

    async def release_reservation(self, reservation: domain.Reservation) -> None:
        if self._store.reservations[reservation.id].status is domain.ReservationStatus.RESERVED:
            self._move(reservation.lines, sign=-1)
            self._store.reservations[reservation.id] = reservation

    async def add_release(self, release: domain.Release) -> None:
        if any(r.idempotency_key == release.idempotency_key for r in self._store.releases.values()):
            raise domain.Conflict(f"idempotency_key {release.idempotency_key} already released another action")
        self._store.releases[release.action_idempotency_key] = release

    def _move(self, lines: Sequence[domain.Line], sign: int) -> None:
        for line in lines:
            level = self._store.stock[line.sku]
            level.available -= sign * line.quantity
            level.reserved += sign * line.quantity
            # The CHECK constraints of the real table.
            if level.available < 0 or level.reserved < 0:
                raise ValueError(f"stock of {line.sku} would go negative")


@pytest.fixture
def make_fake_store() -> Callable[[Mapping[str, int]], FakeInventoryStore]:
    """Factory: an in-memory store holding the given units available per SKU."""
    return FakeInventoryStore
