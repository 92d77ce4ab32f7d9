"""The gRPC face of the order service: protobuf in, use case, protobuf out.

Domain errors become status codes here and nowhere else, in `_answer`. Anything else escapes to
servicekit's interceptor, which logs it and answers INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Final, NoReturn, Protocol, TypeVar

import grpc

from order_service import domain, usecases
from sagaline_contracts.order.v1 import order_pb2, order_pb2_grpc

SERVICE_NAME: Final = "sagaline.order.v1.OrderService"

T = TypeVar("T")

# The most specific class in an error's MRO decides; domain.OrderError itself is never raised.
_STATUS_CODES: Final[dict[type[domain.OrderError], grpc.StatusCode]] = {
    domain.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    domain.NotFoundError: grpc.StatusCode.NOT_FOUND,
    domain.RefusedError: grpc.StatusCode.FAILED_PRECONDITION,
}

_WIRE_STATUS: Final = {
    domain.OrderStatus.CREATED: order_pb2.ORDER_STATUS_CREATED,
    domain.OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    domain.OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}


def status_code(error: domain.OrderError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    for cls in type(error).__mro__:
        if cls in _STATUS_CODES:
            return _STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def order_message(order: domain.Order) -> order_pb2.Order:
    """The wire form of an order; the same order always serializes to the same bytes."""
    return order_pb2.Order(
        order_id=str(order.id),
        saga_id=str(order.saga_id),
        customer_id=str(order.customer_id),
        status=_WIRE_STATUS[order.status],
        total_amount=domain.format_money(order.total_amount),
        currency=order.currency,
        items=[
            order_pb2.OrderItem(sku=line.sku, quantity=line.quantity, unit_price=domain.format_money(line.unit_price))
            for line in order.lines
        ],
    )


def cancel_response(order: domain.Order | None) -> order_pb2.CancelOrderResponse:
    """An empty response when a tombstone was left instead of cancelling an order."""
    if order is None:
        return order_pb2.CancelOrderResponse()
    return order_pb2.CancelOrderResponse(order_id=str(order.id), status=_WIRE_STATUS[order.status])


class _Context(Protocol):
    """The part of `grpc.aio.ServicerContext` used here, typed: `abort` never returns."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn: ...


async def _answer(context: _Context, call: Awaitable[T]) -> T:
    try:
        return await call
    except domain.OrderError as exc:
        await context.abort(status_code(exc), str(exc))


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """Implements `sagaline.order.v1.OrderService` on the use cases."""

    def __init__(self, orders: usecases.Orders) -> None:
        self._orders = orders

    async def CreateOrder(  # noqa: N802 - the generated servicer's method name
        self, request: order_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CreateOrderResponse:
        command = usecases.CreateOrder(
            idempotency_key=request.idempotency_key,
            saga_id=request.saga_id,
            customer_id=request.customer_id,
            currency=request.currency,
            items=tuple(usecases.ItemInput(item.sku, item.quantity, item.unit_price) for item in request.items),
        )
        order = await _answer(context, self._orders.create(command))
        return order_pb2.CreateOrderResponse(order=order_message(order))

    async def ConfirmOrder(  # noqa: N802 - the generated servicer's method name
        self, request: order_pb2.ConfirmOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ConfirmOrderResponse:
        command = usecases.ConfirmOrder(request.idempotency_key, request.saga_id, request.order_id)
        order = await _answer(context, self._orders.confirm(command))
        return order_pb2.ConfirmOrderResponse(order=order_message(order))

    async def CancelOrder(  # noqa: N802 - the generated servicer's method name
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CancelOrderResponse:
        command = usecases.CancelOrder(request.idempotency_key, request.saga_id, request.action_idempotency_key)
        return cancel_response(await _answer(context, self._orders.cancel(command)))

    async def GetOrder(  # noqa: N802 - the generated servicer's method name
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.Order:
        return order_message(await _answer(context, self._orders.get(request.order_id)))
