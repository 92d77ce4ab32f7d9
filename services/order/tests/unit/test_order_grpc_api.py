"""The order service's gRPC face on the use cases and the fake store: messages in and out, and each domain
error answered with its one status code (the servicer is called directly, with a recording context)."""

import itertools
import uuid
from typing import Any

import grpc
import pytest

from order_service import domain, usecases
from order_service.adapters import grpc_api
from sagaline_contracts.order.v1 import order_pb2
from servicekit.testing import Aborted, Context

SAGA = str(uuid.UUID(int=100))
CUSTOMER = str(uuid.UUID(int=200))


@pytest.fixture
def servicer(fake_store: Any) -> grpc_api.OrderServicer:
    counter = itertools.count(1)
    return grpc_api.OrderServicer(usecases.Orders(fake_store, new_id=lambda: uuid.UUID(int=next(counter))))


def create_request(key: str = "create-1", quantity: int = 2) -> order_pb2.CreateOrderRequest:
    return order_pb2.CreateOrderRequest(
        idempotency_key=key,
        saga_id=SAGA,
        customer_id=CUSTOMER,
        currency="USD",
        items=[order_pb2.OrderItem(sku="SKU-1", quantity=quantity, unit_price="10.25")],
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (domain.InvalidRequestError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (domain.NotFoundError("gone"), grpc.StatusCode.NOT_FOUND),
        (domain.RefusedError("no"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.OrderError("unclassified"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_has_one_status_code(error: domain.OrderError, code: grpc.StatusCode) -> None:
    assert grpc_api.status_code(error) == code


async def test_create_confirm_and_get_answer_with_the_order_on_the_wire(servicer: grpc_api.OrderServicer) -> None:
    context: Any = Context()
    created = (await servicer.CreateOrder(create_request(), context)).order
    assert (created.status, created.total_amount, created.currency) == (order_pb2.ORDER_STATUS_CREATED, "20.50", "USD")
    assert [(i.sku, i.quantity, i.unit_price) for i in created.items] == [("SKU-1", 2, "10.25")]
    assert (created.saga_id, created.customer_id) == (SAGA, CUSTOMER)
    confirm = order_pb2.ConfirmOrderRequest(idempotency_key="confirm-1", saga_id=SAGA, order_id=created.order_id)
    confirmed = (await servicer.ConfirmOrder(confirm, context)).order
    assert confirmed.status == order_pb2.ORDER_STATUS_CONFIRMED
    fetched = await servicer.GetOrder(order_pb2.GetOrderRequest(order_id=created.order_id), context)
    assert fetched == confirmed


async def test_cancel_answers_the_cancelled_order_or_nothing_for_a_tombstone(servicer: grpc_api.OrderServicer) -> None:
    context: Any = Context()
    created = (await servicer.CreateOrder(create_request(), context)).order
    cancel = order_pb2.CancelOrderRequest(idempotency_key="cancel-1", saga_id=SAGA, action_idempotency_key="create-1")
    answer = await servicer.CancelOrder(cancel, context)
    assert (answer.order_id, answer.status) == (created.order_id, order_pb2.ORDER_STATUS_CANCELLED)
    # A compensation before its action leaves a tombstone and says so with an empty answer.
    early = order_pb2.CancelOrderRequest(idempotency_key="cancel-2", saga_id=SAGA, action_idempotency_key="never-sent")
    assert await servicer.CancelOrder(early, context) == order_pb2.CancelOrderResponse()


async def test_domain_errors_end_the_call_with_their_status(servicer: grpc_api.OrderServicer) -> None:
    context: Any = Context()
    with pytest.raises(Aborted) as invalid:
        await servicer.CreateOrder(create_request(quantity=0), context)
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Aborted) as missing:
        await servicer.GetOrder(order_pb2.GetOrderRequest(order_id=str(uuid.UUID(int=999))), context)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_service_name_matches_the_proto_package() -> None:
    assert grpc_api.SERVICE_NAME == "sagaline.order.v1.OrderService"
