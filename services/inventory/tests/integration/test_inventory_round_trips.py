"""What a reservation costs the database: the common case is one statement, the others decide as before."""

import uuid
from typing import Any

import pytest

from inventory_service import bootstrap, domain
from inventory_service.adapters import postgres
from inventory_service.usecases import Inventory

SAGA = str(uuid.UUID("99999999-9999-4999-8999-999999999999"))


def reserve(key: str, *items: tuple[str, int]) -> domain.ReserveRequest:
    return domain.ReserveRequest.parse(key, SAGA, items)


async def test_a_new_reservation_is_one_statement_and_the_other_cases_take_the_general_path(
    make_database: Any, statement_log: Any
) -> None:
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_stock(url, {"SKU-A": 5, "SKU-B": 2})
    pool = await statement_log.pool(url)
    inventory = Inventory(postgres.PostgresInventory(pool))
    await inventory.reserve(reserve("warm-up", ("SKU-A", 1)))
    statement_log.sent.clear()  # the first call also read the types of the statement's parameters
    first = await inventory.reserve(reserve("res-1", ("SKU-B", 1), ("SKU-A", 2)))
    assert statement_log.sent == ["SELECT"]  # was BEGIN, lock, reservation, release, stock, insert, COMMIT
    statement_log.sent.clear()
    assert await inventory.reserve(reserve("res-1", ("SKU-B", 1), ("SKU-A", 2))) == first
    assert "BEGIN" in statement_log.sent  # a replay is decided by the general path
    with pytest.raises(domain.OutOfStock):  # SKU-B has 1 left
        await inventory.reserve(reserve("res-2", ("SKU-B", 2)))
    with pytest.raises(domain.NotFound):
        await inventory.reserve(reserve("res-3", ("SKU-NONE", 1), ("SKU-A", 1)))
    await inventory.release(domain.ReleaseRequest.parse("rel-4", SAGA, "res-4", "compensation"))
    with pytest.raises(domain.Tombstoned):
        await inventory.reserve(reserve("res-4", ("SKU-A", 1)))
    levels = dict(await pool.fetch("SELECT sku, available FROM stock"))
    assert levels == {"SKU-A": 2, "SKU-B": 1}
    assert await pool.fetchval("SELECT sum(reserved) FROM stock") == 4
