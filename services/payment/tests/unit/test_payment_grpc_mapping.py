import uuid
from decimal import Decimal

import grpc
import pytest

from payment_service import domain
from payment_service.adapters import grpc_api
from sagaline_contracts.payment.v1 import payment_pb2


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
