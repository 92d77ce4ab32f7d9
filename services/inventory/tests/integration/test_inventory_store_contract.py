"""The same use-case scenarios on the in-memory fake and on PostgreSQL, so the fake the unit tests trust is honest."""

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inventory_service import bootstrap, domain, usecases
from inventory_service.adapters import postgres

MakeDatabase = Callable[[Path | None], Awaitable[str]]
SAGA = uuid.UUID("11111111-1111-4111-8111-111111111111")
STOCK = {"A": 5, "B": 2}


@dataclasses.dataclass
class Subject:
    inventory: usecases.Inventory
    levels: Callable[[], Awaitable[dict[str, tuple[int, int]]]]


@pytest.fixture(params=["fake", "postgres"])
async def subject(
    request: pytest.FixtureRequest,
    make_database: MakeDatabase,
    make_fake_store: Callable[[Mapping[str, int]], Any],
) -> AsyncIterator[Subject]:
    if request.param == "fake":
        store = make_fake_store(STOCK)

        async def fake_levels() -> dict[str, tuple[int, int]]:
            return {sku: (level.available, level.reserved) for sku, level in store.stock.items()}

        yield Subject(usecases.Inventory(store), fake_levels)
        return
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_stock(url, STOCK)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)

    async def db_levels() -> dict[str, tuple[int, int]]:
        rows = await pool.fetch("SELECT sku, available, reserved FROM stock")
        return {row["sku"]: (row["available"], row["reserved"]) for row in rows}

    try:
        yield Subject(usecases.Inventory(postgres.PostgresInventory(pool)), db_levels)
    finally:
        await pool.close()


def reserve(key: str, *items: tuple[str, int]) -> domain.ReserveRequest:
    return domain.ReserveRequest.parse(key, str(SAGA), items)


def release(action_key: str, key: str = "release") -> domain.ReleaseRequest:
    return domain.ReleaseRequest.parse(f"{key}:{action_key}", str(SAGA), action_key, "")


async def test_reserve_replay_and_release(subject: Subject) -> None:
    placed = await subject.inventory.reserve(reserve("k", ("B", 1), ("A", 2), ("A", 1)))
    replayed = await subject.inventory.reserve(reserve("k", ("A", 3), ("B", 1)))
    held = await subject.levels()
    released = await subject.inventory.release(release("k"))
    again = await subject.inventory.release(release("k", key="other"))

    assert replayed == placed
    assert placed.lines == (domain.Line("A", 3), domain.Line("B", 1))
    assert held == {"A": (2, 3), "B": (1, 1)}
    assert again == released
    assert released.reservation_id == placed.id
    assert await subject.levels() == {"A": (5, 0), "B": (2, 0)}
    assert (await subject.inventory.get(placed.id)).status is domain.ReservationStatus.RELEASED
    assert await subject.inventory.reserve(reserve("k", ("A", 3), ("B", 1))) == placed


async def test_declines_change_nothing(subject: Subject) -> None:
    with pytest.raises(domain.OutOfStock, match="insufficient stock for B"):
        await subject.inventory.reserve(reserve("k", ("A", 1), ("B", 3)))
    with pytest.raises(domain.NotFound, match="unknown sku C"):
        await subject.inventory.reserve(reserve("k", ("A", 1), ("C", 1)))

    assert await subject.levels() == {"A": (5, 0), "B": (2, 0)}
    with pytest.raises(domain.NotFound):
        await subject.inventory.get(uuid.uuid4())


async def test_tombstones_and_conflicts(subject: Subject) -> None:
    tombstone = await subject.inventory.release(release("late"))
    await subject.inventory.reserve(reserve("other", ("A", 1)))

    with pytest.raises(domain.Tombstoned):
        await subject.inventory.reserve(reserve("late", ("A", 1)))
    with pytest.raises(domain.Conflict):
        await subject.inventory.reserve(reserve("other", ("A", 2)))
    with pytest.raises(domain.Conflict):
        await subject.inventory.release(domain.ReleaseRequest("release:late", SAGA, "other"))

    assert tombstone.is_tombstone
    assert await subject.levels() == {"A": (4, 1), "B": (2, 0)}
