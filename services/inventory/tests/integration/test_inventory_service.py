"""The inventory service end to end on real PostgreSQL and a real gRPC server, asserting on database rows."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory_service import bootstrap, config, domain
from sagaline_contracts.inventory.v1 import inventory_pb2, inventory_pb2_grpc

MakeDatabase = Callable[[Path | None], Awaitable[str]]
RESERVED = inventory_pb2.RESERVATION_STATUS_RESERVED
RELEASED = inventory_pb2.RESERVATION_STATUS_RELEASED


@dataclasses.dataclass
class Service:
    stub: inventory_pb2_grpc.InventoryServiceStub
    channel: grpc.aio.Channel
    db: asyncpg.Connection
    url: str
    running: bootstrap.Running

    async def stock(self, sku: str) -> tuple[int, int, int]:
        row = await self.db.fetchrow("SELECT available, reserved, initial FROM stock WHERE sku = $1", sku)
        return row["available"], row["reserved"], row["initial"]

    async def add_stock(self, units: int) -> str:
        sku = f"T-{uuid.uuid4().hex[:8]}"
        await self.db.execute("INSERT INTO stock VALUES ($1, $2, 0, $2)", sku, units)
        return sku

    async def count(self, table: str) -> int:
        return int(await self.db.fetchval(f"SELECT count(*) FROM {table}"))

    async def reserve(self, key: str, *items: tuple[str, int], saga: str | None = None) -> Any:
        return await self.stub.ReserveStock(reserve_request(key, *items, saga=saga))

    async def release(self, action_key: str, key: str | None = None, saga: str | None = None) -> Any:
        return await self.stub.ReleaseStock(release_request(action_key, key, saga))


SAGA = str(uuid.uuid4())


def reserve_request(key: str, *items: tuple[str, int], saga: str | None = None) -> inventory_pb2.ReserveStockRequest:
    return inventory_pb2.ReserveStockRequest(
        idempotency_key=key,
        saga_id=saga or SAGA,
        items=[inventory_pb2.StockItem(sku=sku, quantity=quantity) for sku, quantity in items],
    )


def release_request(
    action_key: str, key: str | None = None, saga: str | None = None
) -> inventory_pb2.ReleaseStockRequest:
    return inventory_pb2.ReleaseStockRequest(
        idempotency_key=f"release:{action_key}" if key is None else key,
        saga_id=saga or SAGA,
        action_idempotency_key=action_key,
        reason="compensating",
    )


def settings_for(url: str) -> config.Settings:
    return config.Settings(
        database={"url": url, "min_size": 1, "max_size": 10},
        grpc_host="127.0.0.1",
        grpc_port=0,
        http_host="127.0.0.1",
        http_port=0,
        shutdown_grace="2s",
    )


@pytest.fixture
async def service(make_database: MakeDatabase) -> AsyncIterator[Service]:
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await bootstrap.seed(url)
    running = await bootstrap.start(settings_for(url))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    db = await asyncpg.connect(url)
    try:
        yield Service(inventory_pb2_grpc.InventoryServiceStub(channel), channel, db, url, running)
    finally:
        await db.close()
        await channel.close()
        await running.stop()


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_health_check_and_probes_answer(service: Service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    named = await health.Check(health_pb2.HealthCheckRequest(service="sagaline.inventory.v1.InventoryService"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.running.http_port}") as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")

    assert overall.status == named.status == health_pb2.HealthCheckResponse.SERVING
    assert (live.status_code, ready.status_code) == (200, 200)
    assert ready.json()["database"] == "ok"


async def test_seed_creates_the_demo_stock_once_and_never_resets_it(service: Service) -> None:
    await service.reserve("seeded", ("SKU-GADGET", 5))

    lines = await bootstrap.seed(service.url)

    assert lines == [
        "sku SKU-GADGET available 99995",
        "sku SKU-RARE available 0",
        "sku SKU-WIDGET available 1000000000",
    ]
    assert await service.stock("SKU-GADGET") == (99995, 5, 100000)


async def test_migrate_is_idempotent(service: Service) -> None:
    assert await bootstrap.migrate(service.url) == []


async def test_reserve_twice_gives_one_effect_and_an_identical_response(service: Service) -> None:
    sku = await service.add_stock(10)

    first = await service.reserve("r-1", (sku, 2), (sku, 1))
    second = await service.reserve("r-1", (sku, 2), (sku, 1))

    assert second.SerializeToString() == first.SerializeToString()
    assert first.reservation.status == RESERVED
    assert [(i.sku, i.quantity) for i in first.reservation.items] == [(sku, 3)]
    assert await service.stock(sku) == (7, 3, 10)
    assert await service.count("reservations") == 1


async def test_twenty_concurrent_duplicate_reserves_give_one_effect(service: Service) -> None:
    sku = await service.add_stock(10)

    responses = await asyncio.gather(*(service.reserve("dup", (sku, 2)) for _ in range(20)))

    assert len({r.SerializeToString() for r in responses}) == 1
    assert await service.stock(sku) == (8, 2, 10)
    assert await service.count("reservations") == 1


async def test_fifty_concurrent_reserves_of_ten_units_never_oversell(service: Service) -> None:
    sku = await service.add_stock(10)

    outcomes = await asyncio.gather(
        *(service.reserve(f"scarce-{i}", (sku, 1)) for i in range(50)), return_exceptions=True
    )

    declined = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(outcomes) - len(declined) == 10
    assert {e.code() for e in declined} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert all(sku in e.details() for e in declined)
    assert await service.stock(sku) == (0, 10, 10)
    assert await service.count("reservations") == 10


async def test_overlapping_multi_sku_reserves_do_not_deadlock(service: Service) -> None:
    a, b = await service.add_stock(100), await service.add_stock(100)

    await asyncio.gather(
        *(service.reserve(f"ab-{i}", (a, 1), (b, 1)) for i in range(15)),
        *(service.reserve(f"ba-{i}", (b, 1), (a, 1)) for i in range(15)),
    )

    assert await service.stock(a) == (70, 30, 100)
    assert await service.stock(b) == (70, 30, 100)


async def test_a_short_sku_declines_everything_and_persists_nothing(service: Service) -> None:
    plenty, scarce = await service.add_stock(10), await service.add_stock(1)

    code = await code_of(service.reserve("short", (plenty, 1), (scarce, 2)))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await service.stock(plenty) == (10, 0, 10)
    assert await service.stock(scarce) == (1, 0, 1)
    assert await service.count("reservations") == await service.count("reservation_items") == 0


async def test_the_rare_sku_is_out_of_stock(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.reserve("rare", ("SKU-RARE", 1))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SKU-RARE" in caught.value.details()


async def test_an_unknown_sku_is_not_found_and_persists_nothing(service: Service) -> None:
    sku = await service.add_stock(10)

    code = await code_of(service.reserve("unknown", (sku, 1), ("NO-SUCH-SKU", 1)))

    assert code == grpc.StatusCode.NOT_FOUND
    assert await service.stock(sku) == (10, 0, 10)
    assert await service.count("reservations") == 0


@pytest.mark.parametrize(
    "request_",
    [
        reserve_request("", ("SKU-WIDGET", 1)),
        reserve_request("k", ("SKU-WIDGET", 1), saga="not-a-uuid"),
        inventory_pb2.ReserveStockRequest(idempotency_key="k", items=[inventory_pb2.StockItem(sku="SKU-WIDGET")]),
        reserve_request("k"),
        reserve_request("k", ("SKU-WIDGET", 0)),
        reserve_request("k", ("SKU-WIDGET", -1)),
        reserve_request("k", ("", 1)),
        reserve_request("k", ("SKU-WIDGET", 2**31 - 1), ("SKU-WIDGET", 1)),
    ],
)
async def test_malformed_reserves_are_invalid_and_persist_nothing(
    service: Service, request_: inventory_pb2.ReserveStockRequest
) -> None:
    code = await code_of(service.stub.ReserveStock(request_))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await service.stock("SKU-WIDGET") == (1_000_000_000, 0, 1_000_000_000)
    assert await service.count("reservations") == 0


@pytest.mark.parametrize(
    "request_",
    [
        release_request("a", key=""),
        release_request(""),
        release_request("a", saga="nope"),
        inventory_pb2.ReleaseStockRequest(idempotency_key="r", action_idempotency_key="a"),
    ],
)
async def test_malformed_releases_are_invalid_and_persist_nothing(
    service: Service, request_: inventory_pb2.ReleaseStockRequest
) -> None:
    code = await code_of(service.stub.ReleaseStock(request_))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await service.count("releases") == 0


async def test_release_returns_the_stock_once_and_answers_identically(service: Service) -> None:
    sku = await service.add_stock(10)
    reserved = await service.reserve("to-release", (sku, 4))

    first = await service.release("to-release")
    second = await service.release("to-release")

    assert second.SerializeToString() == first.SerializeToString()
    assert (first.reservation_id, first.status) == (reserved.reservation.reservation_id, RELEASED)
    assert await service.stock(sku) == (10, 0, 10)
    row = await service.db.fetchrow("SELECT status, released_at FROM reservations")
    assert row["status"] == "RELEASED"
    assert row["released_at"] is not None


async def test_twenty_concurrent_duplicate_releases_return_the_stock_once(service: Service) -> None:
    sku = await service.add_stock(10)
    await service.reserve("rel-dup", (sku, 4))

    responses = await asyncio.gather(*(service.release("rel-dup") for _ in range(20)))

    assert len({r.SerializeToString() for r in responses}) == 1
    assert await service.stock(sku) == (10, 0, 10)
    assert await service.count("releases") == 1


async def test_a_release_before_its_reserve_holds_nothing_and_refuses_the_late_reserve(service: Service) -> None:
    sku = await service.add_stock(10)

    tombstone = await service.release("too-late")
    code = await code_of(service.reserve("too-late", (sku, 1)))

    assert (tombstone.reservation_id, tombstone.status) == ("", RELEASED)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await service.stock(sku) == (10, 0, 10)
    assert await service.count("reservations") == 0
    assert (await service.release("too-late")).SerializeToString() == tombstone.SerializeToString()


async def test_a_reserve_racing_its_release_is_either_undone_or_refused(service: Service) -> None:
    sku = await service.add_stock(100)
    keys = [f"race-{i}" for i in range(20)]

    outcomes = await asyncio.gather(
        *(call for key in keys for call in (service.reserve(key, (sku, 1)), service.release(key))),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert {e.code() for e in refused} <= {grpc.StatusCode.FAILED_PRECONDITION}
    assert await service.stock(sku) == (100, 0, 100)
    assert await service.count("releases") == 20
    tombstones = await service.db.fetchval("SELECT count(*) FROM releases WHERE reservation_id IS NULL")
    assert tombstones == len(refused)
    assert await service.count("reservations") == 20 - len(refused)


async def test_a_reserve_key_reused_for_other_items_is_refused(service: Service) -> None:
    sku = await service.add_stock(10)
    await service.reserve("reused", (sku, 1))

    code = await code_of(service.reserve("reused", (sku, 2)))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await service.stock(sku) == (9, 1, 10)


async def test_a_release_key_reused_for_another_action_is_refused(service: Service) -> None:
    sku = await service.add_stock(10)
    await service.reserve("first", (sku, 1))
    await service.reserve("second", (sku, 1))
    await service.release("first", key="same-release-key")

    code = await code_of(service.release("second", key="same-release-key"))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await service.stock(sku) == (9, 1, 10)
    assert await service.count("releases") == 1


async def test_get_reservation_shows_the_current_status(service: Service) -> None:
    sku = await service.add_stock(10)
    reserved = (await service.reserve("get-me", (sku, 2))).reservation
    await service.release("get-me")

    current = await service.stub.GetReservation(
        inventory_pb2.GetReservationRequest(reservation_id=reserved.reservation_id)
    )

    assert (current.reservation_id, current.saga_id, current.status) == (reserved.reservation_id, SAGA, RELEASED)
    assert list(current.items) == list(reserved.items)


@pytest.mark.parametrize(
    ("reservation_id", "code"),
    [
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("x", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_get_reservation_of_a_missing_or_malformed_id(
    service: Service, reservation_id: str, code: grpc.StatusCode
) -> None:
    request = inventory_pb2.GetReservationRequest(reservation_id=reservation_id)

    assert await code_of(service.stub.GetReservation(request)) == code


async def test_reservation_statuses_equal_the_sql_check_list(service: Service) -> None:
    definition = await service.db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'reservations_status_check'"
    )

    for status in domain.ReservationStatus:
        assert f"'{status.value}'::text" in definition
    assert definition.count("'::text") == len(domain.ReservationStatus)


Operation = tuple[str, int, int]  # ("reserve" | "release", key index, quantity)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    initial=st.integers(min_value=0, max_value=6),
    operations=st.lists(
        st.tuples(st.sampled_from(["reserve", "release"]), st.integers(0, 5), st.integers(1, 3)), max_size=24
    ),
)
async def test_stock_is_conserved_over_any_interleaving_of_reserves_and_releases(
    service: Service, initial: int, operations: list[Operation]
) -> None:
    sku = await service.add_stock(initial)
    prefix = uuid.uuid4().hex
    calls = [
        service.reserve(f"{prefix}-{key}", (sku, quantity)) if kind == "reserve" else service.release(f"{prefix}-{key}")
        for kind, key, quantity in operations
    ]

    await asyncio.gather(*calls, return_exceptions=True)

    available, reserved, total = await service.stock(sku)
    held = await service.db.fetchval(
        "SELECT coalesce(sum(i.quantity), 0) FROM reservation_items AS i"
        " JOIN reservations AS r ON r.id = i.reservation_id WHERE i.sku = $1 AND r.status = 'RESERVED'",
        sku,
    )
    assert (available + reserved, total) == (initial, initial)
    assert reserved == held
    orphans = await service.db.fetchval(
        "SELECT count(*) FROM releases AS l JOIN reservations AS r ON r.idempotency_key = l.action_idempotency_key"
        " WHERE r.status <> 'RELEASED' OR l.reservation_id IS DISTINCT FROM r.id"
    )
    assert orphans == 0


async def test_serve_runs_until_the_stop_event_and_drains(make_database: MakeDatabase) -> None:
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    stop = asyncio.Event()

    task = asyncio.create_task(bootstrap.serve(settings_for(url), stop))
    await asyncio.sleep(0.3)
    stop.set()

    assert await asyncio.wait_for(task, 10) == 0
