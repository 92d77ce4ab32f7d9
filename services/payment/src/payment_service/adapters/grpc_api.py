"""The gRPC face of the payment service: requests in, domain commands through, responses out.

Domain errors become status codes here and nowhere else; anything unexpected is left to servicekit's
interceptor, which answers INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import grpc

from payment_service import domain, usecases
from sagaline_contracts.payment.v1 import payment_pb2, payment_pb2_grpc

T = TypeVar("T")

SERVICE_NAME: Final = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name

_STATUS_CODES: Final[tuple[tuple[type[domain.PaymentError], Any], ...]] = (
    (domain.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (domain.NotFound, grpc.StatusCode.NOT_FOUND),
    (domain.Rejected, grpc.StatusCode.FAILED_PRECONDITION),
)

_WIRE_STATUS: Final = {
    domain.PaymentStatus.CAPTURED: payment_pb2.PAYMENT_STATUS_CAPTURED,
    domain.PaymentStatus.REFUNDED: payment_pb2.PAYMENT_STATUS_REFUNDED,
}


def status_code(error: domain.PaymentError) -> Any:
    """The gRPC status code a domain error is reported with."""
    return next(code for kind, code in _STATUS_CODES if isinstance(error, kind))


async def _answer(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    try:
        return await call
    except domain.PaymentError as exc:
        await context.abort(status_code(exc), str(exc))
        raise  # context.abort always raises; this line only tells the type checker so


def _capture_command(request: payment_pb2.ProcessPaymentRequest) -> domain.CaptureCommand:
    return domain.CaptureCommand(
        idempotency_key=domain.parse_key(request.idempotency_key),
        saga_id=domain.parse_uuid(request.saga_id, "saga_id"),
        customer_id=domain.parse_uuid(request.customer_id, "customer_id"),
        amount=domain.parse_money(request.amount),
        currency=domain.parse_currency(request.currency),
    )


def _refund_command(request: payment_pb2.RefundPaymentRequest) -> domain.RefundCommand:
    return domain.RefundCommand(
        idempotency_key=domain.parse_key(request.idempotency_key),
        saga_id=domain.parse_uuid(request.saga_id, "saga_id"),
        action_idempotency_key=domain.parse_key(request.action_idempotency_key, "action_idempotency_key"),
        reason=request.reason,
    )


def to_wire(payment: domain.Payment) -> payment_pb2.Payment:
    """The protobuf message for a payment."""
    return payment_pb2.Payment(
        payment_id=str(payment.id),
        saga_id=str(payment.saga_id),
        customer_id=str(payment.customer_id),
        amount=domain.format_money(payment.amount),
        currency=payment.currency,
        status=_WIRE_STATUS[payment.status],
    )


class PaymentApi(payment_pb2_grpc.PaymentServiceServicer):
    """`sagaline.payment.v1.PaymentService` over the use cases."""

    def __init__(
        self, process: usecases.ProcessPayment, refund: usecases.RefundPayment, get: usecases.GetPayment
    ) -> None:
        self._process = process
        self._refund = refund
        self._get = get

    async def ProcessPayment(  # noqa: N802 - the generated servicer's name
        self, request: payment_pb2.ProcessPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ProcessPaymentResponse:
        payment = await _answer(context, self._process_request(request))
        return payment_pb2.ProcessPaymentResponse(payment=to_wire(payment))

    async def RefundPayment(  # noqa: N802 - the generated servicer's name
        self, request: payment_pb2.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.RefundPaymentResponse:
        outcome = await _answer(context, self._refund_request(request))
        return payment_pb2.RefundPaymentResponse(
            payment_id="" if outcome.payment_id is None else str(outcome.payment_id),
            refunded_amount=domain.format_money(outcome.refunded_amount),
        )

    async def GetPayment(  # noqa: N802 - the generated servicer's name
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.Payment:
        payment = await _answer(context, self._get_request(request))
        return to_wire(payment)

    async def _process_request(self, request: payment_pb2.ProcessPaymentRequest) -> domain.Payment:
        return await self._process(_capture_command(request))

    async def _refund_request(self, request: payment_pb2.RefundPaymentRequest) -> domain.RefundOutcome:
        return await self._refund(_refund_command(request))

    async def _get_request(self, request: payment_pb2.GetPaymentRequest) -> domain.Payment:
        return await self._get(domain.parse_uuid(request.payment_id, "payment_id"))
