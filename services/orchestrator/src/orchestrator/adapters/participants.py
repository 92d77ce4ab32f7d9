"""The participant services over gRPC: requests built from plain data, outcomes mapped to domain errors.

This is the one place where a gRPC status becomes a domain error (SPEC section 6):

    retried:       UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN
                   -> TransientStepError (the effect may have happened; retry with the same key)
    never retried: FAILED_PRECONDITION -> BusinessDecline; INVALID_ARGUMENT, NOT_FOUND,
                   PERMISSION_DENIED, UNAUTHENTICATED and anything else -> PermanentStepError
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.message import Message

from orchestrator import ports
from orchestrator.adapters import messages
from orchestrator.domain import errors
from orchestrator.domain.definition import Call
from sagaline_contracts.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from sagaline_contracts.order.v1 import order_pb2, order_pb2_grpc
from sagaline_contracts.payment.v1 import payment_pb2, payment_pb2_grpc
from servicekit import grpc_client, settings

TRANSIENT: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


@dataclass(frozen=True)
class _Method:
    stub: type[Any]
    request: type[Message]


# Every (service, method) a definition may name, with its stub and request message.
METHODS: Final[dict[tuple[str, str], _Method]] = {
    ("order", "CreateOrder"): _Method(order_pb2_grpc.OrderServiceStub, order_pb2.CreateOrderRequest),
    ("order", "CancelOrder"): _Method(order_pb2_grpc.OrderServiceStub, order_pb2.CancelOrderRequest),
    ("order", "ConfirmOrder"): _Method(order_pb2_grpc.OrderServiceStub, order_pb2.ConfirmOrderRequest),
    ("payment", "ProcessPayment"): _Method(payment_pb2_grpc.PaymentServiceStub, payment_pb2.ProcessPaymentRequest),
    ("payment", "RefundPayment"): _Method(payment_pb2_grpc.PaymentServiceStub, payment_pb2.RefundPaymentRequest),
    ("inventory", "ReserveStock"): _Method(inventory_pb2_grpc.InventoryServiceStub, inventory_pb2.ReserveStockRequest),
    ("inventory", "ReleaseStock"): _Method(inventory_pb2_grpc.InventoryServiceStub, inventory_pb2.ReleaseStockRequest),
}


# The gRPC service each participant serves, as its calls are labelled in metrics and spans.
_SERVICE_NAMES: Final = {
    "order": order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    "inventory": inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
}


def translate(exc: grpc.aio.AioRpcError) -> errors.StepError:
    """Map a failed call's status code to the domain's transient/permanent error types."""
    code = exc.code()
    message = f"{code.name}: {exc.details()}"
    if code in TRANSIENT:
        return errors.TransientStepError(message, code.name)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return errors.BusinessDecline(message, code.name)
    return errors.PermanentStepError(message, code.name)


def _caller(lease: ports.Lease | None) -> tuple[tuple[str, str], ...]:
    """Who sends the call, under which fence: lets a participant (or a fault test) tell a stale owner's call."""
    if lease is None:
        return ()
    return (("sagaline-owner", lease.owner_id), ("sagaline-fence", str(lease.fence)))


class GrpcParticipants:
    """The Participants port over one channel per service."""

    def __init__(self, targets: Mapping[str, str], security: settings.ClientTlsSettings | None = None) -> None:
        """`targets` maps a service name ("order") to its `host:port`.

        With security holding certificates every channel is mutual TLS; plaintext otherwise.

        Raises:
            ConfigError: a certificate, key or CA file cannot be read.
        """
        self._channels = {
            # Observed per call by `grpc_client.unary`, not by a channel interceptor (cheaper on the hot path).
            service: grpc_client.channel(target, security, service, instrumented=False)
            for service, target in targets.items()
        }
        self._stubs = {key: m.stub(self._channels[key[0]]) for key, m in METHODS.items() if key[0] in self._channels}

    async def invoke(
        self,
        call: Call,
        request: dict[str, Any],
        *,
        saga_id: str,
        idempotency_key: str,
        action_key: str | None,
        lease: ports.Lease | None = None,
    ) -> dict[str, Any]:
        method = METHODS[(call.service, call.method)]
        fields = {**request, "idempotency_key": idempotency_key, "saga_id": saga_id}
        if action_key is not None:
            fields["action_idempotency_key"] = action_key
        message = messages.to_message(fields, method.request)
        rpc = getattr(self._stubs[(call.service, call.method)], call.method)
        try:
            response = await grpc_client.unary(
                rpc, message, service=_SERVICE_NAMES[call.service], method=call.method,
                timeout=call.timeout.total_seconds(), metadata=_caller(lease),
            )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        except TimeoutError as exc:  # pragma: no cover - grpc reports timeouts as DEADLINE_EXCEEDED
            raise errors.TransientStepError("client-side timeout", "DEADLINE_EXCEEDED") from exc
        return messages.to_dict(response)

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
