import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from inventory_service import domain, usecases

SAGA = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_SAGA = uuid.UUID("22222222-2222-4222-8222-222222222222")
Status = domain.ReservationStatus


def reserve(*items: tuple[str, int], key: str = "reserve-1", saga: uuid.UUID = SAGA) -> domain.ReserveRequest:
    return domain.ReserveRequest.parse(key, str(saga), items)


def release(action_key: str = "reserve-1", key: str = "release-1", saga: uuid.UUID = SAGA) -> domain.ReleaseRequest:
    return domain.ReleaseRequest.parse(key, str(saga), action_key, "compensating")


@pytest.fixture
def store(make_fake_store: Callable[[Mapping[str, int]], Any]) -> Any:
    return make_fake_store({"WIDGET": 10, "GADGET": 3, "RARE": 0})


@pytest.fixture
def inventory(store: Any) -> usecases.Inventory:
    return usecases.Inventory(store)


def levels(store: Any) -> dict[str, tuple[int, int]]:
    return {sku: (level.available, level.reserved) for sku, level in store.stock.items()}


async def test_reserving_moves_every_line_from_available_to_reserved(inventory: usecases.Inventory, store: Any) -> None:
    reservation = await inventory.reserve(reserve(("WIDGET", 2), ("GADGET", 1), ("WIDGET", 1)))

    assert reservation.lines == (domain.Line("GADGET", 1), domain.Line("WIDGET", 3))
    assert reservation.status is Status.RESERVED
    assert levels(store) == {"WIDGET": (7, 3), "GADGET": (2, 1), "RARE": (0, 0)}


async def test_new_reservations_are_named_by_the_injected_id_source(store: Any) -> None:
    fixed = uuid.UUID("33333333-3333-4333-8333-333333333333")
    inventory = usecases.Inventory(store, new_id=lambda: fixed)

    reservation = await inventory.reserve(reserve(("WIDGET", 1)))

    assert reservation.id == fixed


async def test_a_repeated_reserve_returns_the_original_and_changes_nothing(
    inventory: usecases.Inventory, store: Any
) -> None:
    first = await inventory.reserve(reserve(("WIDGET", 4)))
    second = await inventory.reserve(reserve(("WIDGET", 4)))

    assert second == first
    assert levels(store)["WIDGET"] == (6, 4)
    assert len(store.reservations) == 1


async def test_concurrent_duplicates_reserve_once(inventory: usecases.Inventory, store: Any) -> None:
    results = await asyncio.gather(*(inventory.reserve(reserve(("WIDGET", 1))) for _ in range(20)))

    assert len(set(results)) == 1
    assert levels(store)["WIDGET"] == (9, 1)


async def test_a_key_reused_for_other_items_conflicts_and_changes_nothing(
    inventory: usecases.Inventory, store: Any
) -> None:
    await inventory.reserve(reserve(("WIDGET", 1)))

    with pytest.raises(domain.Conflict):
        await inventory.reserve(reserve(("WIDGET", 2)))
    assert levels(store)["WIDGET"] == (9, 1)


async def test_a_short_sku_declines_the_whole_reservation(inventory: usecases.Inventory, store: Any) -> None:
    with pytest.raises(domain.OutOfStock, match="GADGET"):
        await inventory.reserve(reserve(("WIDGET", 1), ("GADGET", 4)))

    assert levels(store) == {"WIDGET": (10, 0), "GADGET": (3, 0), "RARE": (0, 0)}
    assert store.reservations == {}
    assert store.releases == {}


async def test_an_unknown_sku_is_not_found_and_changes_nothing(inventory: usecases.Inventory, store: Any) -> None:
    with pytest.raises(domain.NotFound, match="unknown sku NOPE"):
        await inventory.reserve(reserve(("WIDGET", 1), ("NOPE", 1)))

    assert levels(store)["WIDGET"] == (10, 0)
    assert store.reservations == {}


async def test_a_declined_key_may_succeed_once_the_stock_is_there(inventory: usecases.Inventory, store: Any) -> None:
    with pytest.raises(domain.OutOfStock):
        await inventory.reserve(reserve(("RARE", 1)))
    store.stock["RARE"].available = store.stock["RARE"].initial = 1

    reservation = await inventory.reserve(reserve(("RARE", 1)))

    assert reservation.status is Status.RESERVED


async def test_releasing_returns_the_stock_once(inventory: usecases.Inventory, store: Any) -> None:
    reservation = await inventory.reserve(reserve(("WIDGET", 4)))

    first = await inventory.release(release())
    second = await inventory.release(release())

    assert first == second
    assert first.reservation_id == reservation.id
    assert levels(store)["WIDGET"] == (10, 0)
    assert store.reservations[reservation.id].status is Status.RELEASED


async def test_a_release_under_another_key_for_the_same_action_has_no_further_effect(
    inventory: usecases.Inventory, store: Any
) -> None:
    await inventory.reserve(reserve(("WIDGET", 4)))
    first = await inventory.release(release(key="release-a"))

    second = await inventory.release(release(key="release-b"))

    assert second == first
    assert levels(store)["WIDGET"] == (10, 0)


async def test_concurrent_duplicate_releases_return_stock_once(inventory: usecases.Inventory, store: Any) -> None:
    await inventory.reserve(reserve(("WIDGET", 4)))

    results = await asyncio.gather(*(inventory.release(release()) for _ in range(20)))

    assert len(set(results)) == 1
    assert levels(store)["WIDGET"] == (10, 0)


async def test_a_release_before_the_reserve_tombstones_the_key(inventory: usecases.Inventory, store: Any) -> None:
    tombstone = await inventory.release(release())

    with pytest.raises(domain.Tombstoned):
        await inventory.reserve(reserve(("WIDGET", 1)))

    assert tombstone.is_tombstone
    assert await inventory.release(release()) == tombstone
    assert levels(store)["WIDGET"] == (10, 0)
    assert store.reservations == {}


async def test_a_repeated_reserve_after_its_release_returns_the_original_reservation(
    inventory: usecases.Inventory, store: Any
) -> None:
    reservation = await inventory.reserve(reserve(("WIDGET", 2)))
    await inventory.release(release())

    again = await inventory.reserve(reserve(("WIDGET", 2)))

    assert again == reservation
    assert levels(store)["WIDGET"] == (10, 0)


async def test_a_release_key_reused_for_another_action_conflicts_and_changes_nothing(
    inventory: usecases.Inventory, store: Any
) -> None:
    await inventory.reserve(reserve(("WIDGET", 1), key="reserve-2"))
    await inventory.release(release(action_key="reserve-1", key="release-1"))

    with pytest.raises(domain.Conflict):
        await inventory.release(release(action_key="reserve-2", key="release-1"))

    assert levels(store)["WIDGET"] == (9, 1)
    assert set(store.releases) == {"reserve-1"}


async def test_releasing_another_sagas_reservation_conflicts(inventory: usecases.Inventory, store: Any) -> None:
    await inventory.reserve(reserve(("WIDGET", 1)))

    with pytest.raises(domain.Conflict):
        await inventory.release(release(saga=OTHER_SAGA))

    assert levels(store)["WIDGET"] == (9, 1)
    assert store.releases == {}


async def test_get_returns_the_current_status(inventory: usecases.Inventory) -> None:
    reservation = await inventory.reserve(reserve(("WIDGET", 1)))
    await inventory.release(release())

    current = await inventory.get(reservation.id)

    assert current.status is Status.RELEASED
    assert current.lines == reservation.lines


async def test_get_of_an_unknown_reservation_is_not_found(inventory: usecases.Inventory) -> None:
    with pytest.raises(domain.NotFound):
        await inventory.get(uuid.uuid4())
