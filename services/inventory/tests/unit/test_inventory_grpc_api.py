"""The inventory service's gRPC face on the use cases and the fake store: messages in and out, and each domain
error answered with its one status code (the servicer is called directly, with a recording context)."""

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import pytest

from inventory_service import domain, usecases
from inventory_service.adapters import grpc_api
from sagaline_contracts.inventory.v1 import inventory_pb2
from servicekit.testing import Aborted, Context

SAGA = "11111111-1111-4111-8111-111111111111"


@pytest.fixture
def store(make_fake_store: Callable[[Mapping[str, int]], Any]) -> Any:
    return make_fake_store({"WIDGET": 10, "RARE": 0})


@pytest.fixture
def servicer(store: Any) -> grpc_api.InventoryServicer:
    return grpc_api.InventoryServicer(usecases.Inventory(store))


def reserve(*items: tuple[str, int], key: str = "reserve-1") -> inventory_pb2.ReserveStockRequest:
    stock = [inventory_pb2.StockItem(sku=sku, quantity=quantity) for sku, quantity in items]
    return inventory_pb2.ReserveStockRequest(idempotency_key=key, saga_id=SAGA, items=stock)


def release(action_key: str = "reserve-1") -> inventory_pb2.ReleaseStockRequest:
    return inventory_pb2.ReleaseStockRequest(
        idempotency_key="release-1", saga_id=SAGA, action_idempotency_key=action_key, reason="compensating"
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (domain.InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (domain.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (domain.Refused("no"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_each_domain_error_has_one_status_code(error: domain.InventoryError, code: grpc.StatusCode) -> None:
    assert grpc_api.status_code(error) == code


async def test_stock_is_reserved_read_back_and_released_through_the_servicer(
    servicer: grpc_api.InventoryServicer, store: Any
) -> None:
    context: Any = Context()
    reservation = (await servicer.ReserveStock(reserve(("WIDGET", 3)), context)).reservation
    assert reservation.status == inventory_pb2.RESERVATION_STATUS_RESERVED
    assert [(i.sku, i.quantity) for i in reservation.items] == [("WIDGET", 3)]
    assert reservation.saga_id == SAGA
    assert (store.stock["WIDGET"].available, store.stock["WIDGET"].reserved) == (7, 3)
    read = inventory_pb2.GetReservationRequest(reservation_id=reservation.reservation_id)
    assert await servicer.GetReservation(read, context) == reservation
    released = await servicer.ReleaseStock(release(), context)
    assert released.reservation_id == reservation.reservation_id
    assert released.status == inventory_pb2.RESERVATION_STATUS_RELEASED
    assert (store.stock["WIDGET"].available, store.stock["WIDGET"].reserved) == (10, 0)


async def test_a_release_before_its_reservation_names_no_reservation(servicer: grpc_api.InventoryServicer) -> None:
    answer = await servicer.ReleaseStock(release(action_key="never-sent"), Context())  # type: ignore[arg-type]
    assert answer.reservation_id == ""


async def test_refusals_end_the_call_with_their_status(servicer: grpc_api.InventoryServicer) -> None:
    context: Any = Context()
    with pytest.raises(Aborted) as short:
        await servicer.ReserveStock(reserve(("RARE", 1)), context)
    assert short.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(Aborted) as invalid:
        await servicer.ReserveStock(reserve(("WIDGET", 0)), context)
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Aborted) as missing:
        await servicer.GetReservation(
            inventory_pb2.GetReservationRequest(reservation_id=str(uuid.UUID(int=5))), context
        )
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
