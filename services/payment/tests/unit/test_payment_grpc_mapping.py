import uuid
from decimal import Decimal
from typing import Any

import grpc
import pytest

from payment_service import domain, usecases
from payment_service.adapters import grpc_api
from sagaline_contracts.payment.v1 import payment_pb2
from servicekit.testing import Aborted, Context


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (domain.InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (domain.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (domain.Declined("insufficient funds"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.Tombstoned("compensated"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.KeyReused("other request"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.IllegalTransition("no"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_each_domain_error_has_one_status_code(error: domain.PaymentError, code: grpc.StatusCode) -> None:
    assert grpc_api.status_code(error) == code


def test_payments_go_on_the_wire_with_exact_money_and_status() -> None:
    payment = domain.Payment(
        uuid.UUID(int=1), uuid.UUID(int=2), "k", uuid.UUID(int=3), Decimal("5"), "USD", domain.PaymentStatus.REFUNDED
    )
    wire = grpc_api.to_wire(payment)
    assert wire.amount == "5.00"
    assert wire.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert wire.payment_id == str(uuid.UUID(int=1))


def test_service_name_matches_the_proto_package() -> None:
    assert grpc_api.SERVICE_NAME == "sagaline.payment.v1.PaymentService"


CUSTOMER = uuid.UUID("33333333-3333-4333-8333-333333333333")
SAGA = "99999999-9999-4999-8999-999999999999"


@pytest.fixture
def api(fake_ledger: Any) -> grpc_api.PaymentApi:
    fake_ledger.add_account(domain.Account(CUSTOMER, "carol", Decimal("100.00")))
    ids = iter(uuid.UUID(int=n) for n in range(1, 100))
    return grpc_api.PaymentApi(
        usecases.ProcessPayment(fake_ledger, new_id=lambda: next(ids)),
        usecases.RefundPayment(fake_ledger),
        usecases.GetPayment(fake_ledger),
    )


def charge(key: str = "pay-1", amount: str = "30.00") -> payment_pb2.ProcessPaymentRequest:
    return payment_pb2.ProcessPaymentRequest(
        idempotency_key=key, saga_id=SAGA, customer_id=str(CUSTOMER), amount=amount, currency="USD"
    )


async def test_a_payment_is_taken_read_back_and_refunded_through_the_servicer(
    api: grpc_api.PaymentApi, fake_ledger: Any
) -> None:
    context: Any = Context()
    taken = (await api.ProcessPayment(charge(), context)).payment
    assert (taken.amount, taken.status) == ("30.00", payment_pb2.PAYMENT_STATUS_CAPTURED)
    assert fake_ledger.balance(CUSTOMER) == Decimal("70.00")
    assert await api.GetPayment(payment_pb2.GetPaymentRequest(payment_id=taken.payment_id), context) == taken
    refund = payment_pb2.RefundPaymentRequest(
        idempotency_key="refund-1", saga_id=SAGA, action_idempotency_key="pay-1", reason="declined downstream"
    )
    answer = await api.RefundPayment(refund, context)
    assert (answer.payment_id, answer.refunded_amount) == (taken.payment_id, "30.00")
    assert fake_ledger.balance(CUSTOMER) == Decimal("100.00")


async def test_a_refund_before_its_payment_answers_nothing_refunded(api: grpc_api.PaymentApi) -> None:
    refund = payment_pb2.RefundPaymentRequest(
        idempotency_key="refund-1", saga_id=SAGA, action_idempotency_key="never-sent", reason="compensation"
    )
    answer = await api.RefundPayment(refund, Context())  # type: ignore[arg-type]
    assert (answer.payment_id, answer.refunded_amount) == ("", "0.00")


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (charge(amount="500.00"), grpc.StatusCode.FAILED_PRECONDITION),  # the balance is short: a decline
        (charge(amount="-1"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            payment_pb2.ProcessPaymentRequest(idempotency_key="k", saga_id="not-a-uuid"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_refusals_end_the_call_with_their_status(
    api: grpc_api.PaymentApi, request_: payment_pb2.ProcessPaymentRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(Aborted) as refused:
        await api.ProcessPayment(request_, Context())  # type: ignore[arg-type]
    assert refused.value.code == code


async def test_an_unknown_payment_is_not_found(api: grpc_api.PaymentApi) -> None:
    with pytest.raises(Aborted) as missing:
        await api.GetPayment(payment_pb2.GetPaymentRequest(payment_id=str(uuid.UUID(int=7))), Context())  # type: ignore[arg-type]
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
