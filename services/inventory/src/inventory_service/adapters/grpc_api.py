"""The `sagaline.inventory.v1.InventoryService` gRPC servicer: wire messages in, use cases, wire messages out.

Domain errors become status codes here and nowhere else, through `_answer`; anything else propagates to
servicekit's interceptor, which logs it and answers INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import grpc

from inventory_service import domain, usecases
from sagaline_contracts.inventory.v1 import inventory_pb2, inventory_pb2_grpc

SERVICE_NAME: Final = "sagaline.inventory.v1.InventoryService"

T = TypeVar("T")

# Most specific first: the first class an error is an instance of decides its code.
_STATUS_CODES: Final[tuple[tuple[type[domain.InventoryError], grpc.StatusCode], ...]] = (
    (domain.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (domain.NotFound, grpc.StatusCode.NOT_FOUND),
    (domain.Refused, grpc.StatusCode.FAILED_PRECONDITION),
)

_WIRE_STATUS: Final = {
    domain.ReservationStatus.RESERVED: inventory_pb2.RESERVATION_STATUS_RESERVED,
    domain.ReservationStatus.RELEASED: inventory_pb2.RESERVATION_STATUS_RELEASED,
}


def status_code(error: domain.InventoryError) -> grpc.StatusCode:
    """The gRPC status code that reports error."""
    for error_type, code in _STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


async def _answer(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    try:
        return await call
    except domain.InventoryError as exc:
        await context.abort(status_code(exc), str(exc))
        raise  # abort always raises; this line only tells the type checker so


def _reservation_message(reservation: domain.Reservation) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        reservation_id=str(reservation.id),
        saga_id=str(reservation.saga_id),
        status=_WIRE_STATUS[reservation.status],
        items=[inventory_pb2.StockItem(sku=line.sku, quantity=line.quantity) for line in reservation.lines],
    )


def _release_message(release: domain.Release) -> inventory_pb2.ReleaseStockResponse:
    return inventory_pb2.ReleaseStockResponse(
        reservation_id="" if release.reservation_id is None else str(release.reservation_id),
        status=_WIRE_STATUS[release.status],
    )


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """Serves the inventory use cases over gRPC."""

    def __init__(self, inventory: usecases.Inventory) -> None:
        self._inventory = inventory

    async def ReserveStock(  # noqa: N802 - the generated servicer's method name
        self, request: inventory_pb2.ReserveStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReserveStockResponse:
        return await _answer(context, self._reserve(request))

    async def ReleaseStock(  # noqa: N802 - the generated servicer's method name
        self, request: inventory_pb2.ReleaseStockRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReleaseStockResponse:
        return await _answer(context, self._release(request))

    async def GetReservation(  # noqa: N802 - the generated servicer's method name
        self, request: inventory_pb2.GetReservationRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        return await _answer(context, self._get(request))

    async def _reserve(self, request: inventory_pb2.ReserveStockRequest) -> inventory_pb2.ReserveStockResponse:
        parsed = domain.ReserveRequest.parse(
            request.idempotency_key, request.saga_id, [(item.sku, item.quantity) for item in request.items]
        )
        reservation = await self._inventory.reserve(parsed)
        return inventory_pb2.ReserveStockResponse(reservation=_reservation_message(reservation))

    async def _release(self, request: inventory_pb2.ReleaseStockRequest) -> inventory_pb2.ReleaseStockResponse:
        parsed = domain.ReleaseRequest.parse(
            request.idempotency_key, request.saga_id, request.action_idempotency_key, request.reason
        )
        return _release_message(await self._inventory.release(parsed))

    async def _get(self, request: inventory_pb2.GetReservationRequest) -> inventory_pb2.Reservation:
        reservation_id = domain.parse_uuid(request.reservation_id, "reservation_id")
        return _reservation_message(await self._inventory.get(reservation_id))


def register(server: Any, servicer: InventoryServicer) -> None:
    """Add servicer to a grpc.aio server."""
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, server)
