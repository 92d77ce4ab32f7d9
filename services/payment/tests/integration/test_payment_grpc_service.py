import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagaline_contracts.payment.v1 import payment_pb2

pb = payment_pb2


def pay(customer: uuid.UUID, key: str = "saga:process_payment", amount: str = "30.00", **fields: str) -> Any:
    base = {"idempotency_key": key, "saga_id": str(uuid.uuid4()), "customer_id": str(customer), "amount": amount}
    return pb.ProcessPaymentRequest(**{**base, "currency": "USD", **fields})


def refund(action: str = "saga:process_payment", key: str = "saga:refund_payment", saga: str = "") -> Any:
    return pb.RefundPaymentRequest(
        idempotency_key=key, saga_id=saga or str(uuid.uuid4()), action_idempotency_key=action, reason="compensate"
    )


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


async def balance(db: asyncpg.Connection, customer: uuid.UUID) -> Decimal:
    value: Decimal = await db.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer)
    return value


async def counts(db: asyncpg.Connection) -> tuple[int, int, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM payments) AS p, (SELECT count(*) FROM payment_tombstones) AS t,"
        " (SELECT count(*) FROM refunds) AS r"
    )
    return row["p"], row["t"], row["r"]


async def test_payment_twice_captures_once_with_an_identical_response(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    request = pay(customer)
    first = await stub.ProcessPayment(request)
    second = await stub.ProcessPayment(request)
    assert first.SerializeToString() == second.SerializeToString()
    assert first.payment.status == pb.PAYMENT_STATUS_CAPTURED
    assert (first.payment.amount, first.payment.customer_id) == ("30.00", str(customer))
    assert await balance(db, customer) == Decimal("70.00")
    assert await counts(db) == (1, 0, 0)
    row = await db.fetchrow("SELECT saga_id, status FROM payments")
    assert (str(row["saga_id"]), row["status"]) == (request.saga_id, "CAPTURED")
    await conserved()


async def test_twenty_concurrent_duplicates_capture_once(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    request = pay(customer)
    answers = await asyncio.gather(*(stub.ProcessPayment(request) for _ in range(20)))
    assert len({a.SerializeToString() for a in answers}) == 1
    assert await balance(db, customer) == Decimal("70.00")
    assert await counts(db) == (1, 0, 0)
    await conserved()


async def test_insufficient_funds_declines_and_persists_nothing(
    stub: Any, db: asyncpg.Connection, new_account: Any
) -> None:
    customer = await new_account("29.99")
    with pytest.raises(grpc.aio.AioRpcError) as declined:
        await stub.ProcessPayment(pay(customer))
    assert declined.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient funds" in (declined.value.details() or "")
    assert await balance(db, customer) == Decimal("29.99")
    assert await counts(db) == (0, 0, 0)


async def test_currency_other_than_the_accounts_is_declined(
    stub: Any, db: asyncpg.Connection, new_account: Any
) -> None:
    customer = await new_account("100.00")
    assert await code_of(stub.ProcessPayment(pay(customer, currency="EUR"))) == grpc.StatusCode.FAILED_PRECONDITION
    assert await counts(db) == (0, 0, 0)


async def test_key_reused_for_a_different_amount_is_refused(
    stub: Any, db: asyncpg.Connection, new_account: Any
) -> None:
    customer = await new_account("100.00")
    request = pay(customer)
    await stub.ProcessPayment(request)
    other = pb.ProcessPaymentRequest()
    other.CopyFrom(request)
    other.amount = "31.00"
    assert await code_of(stub.ProcessPayment(other)) == grpc.StatusCode.FAILED_PRECONDITION
    assert await balance(db, customer) == Decimal("70.00")


BAD_PAYMENTS = [
    {"idempotency_key": ""},
    {"idempotency_key": "k" * 256},
    {"saga_id": ""},
    {"saga_id": "saga-1"},
    {"customer_id": "alice"},
    {"amount": ""},
    {"amount": "0.00"},
    {"amount": "-5.00"},
    {"amount": "1.005"},
    {"amount": "NaN"},
    {"amount": "1e3"},
    {"currency": "dollars"},
]


async def test_bad_payment_requests_are_invalid_and_persist_nothing(
    stub: Any, db: asyncpg.Connection, new_account: Any
) -> None:
    customer = await new_account("100.00")
    for bad in BAD_PAYMENTS:
        assert await code_of(stub.ProcessPayment(pay(customer, **bad))) == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert await balance(db, customer) == Decimal("100.00")
    assert await counts(db) == (0, 0, 0)


async def test_unknown_customer_is_not_found(stub: Any, db: asyncpg.Connection) -> None:
    assert await code_of(stub.ProcessPayment(pay(uuid.uuid4()))) == grpc.StatusCode.NOT_FOUND
    assert await counts(db) == (0, 0, 0)


async def test_refund_twice_credits_once_with_an_identical_response(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    captured = await stub.ProcessPayment(pay(customer))
    first = await stub.RefundPayment(refund())
    second = await stub.RefundPayment(refund())
    assert first.SerializeToString() == second.SerializeToString()
    assert (first.payment_id, first.refunded_amount) == (captured.payment.payment_id, "30.00")
    other_key = await stub.RefundPayment(refund(key="another-refund-key"))
    assert other_key.SerializeToString() == first.SerializeToString()
    assert await balance(db, customer) == Decimal("100.00")
    assert await db.fetchval("SELECT status FROM payments") == "REFUNDED"
    assert await counts(db) == (1, 0, 2)
    await conserved()


async def test_twenty_concurrent_refunds_credit_once(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    await stub.ProcessPayment(pay(customer))
    answers = await asyncio.gather(*(stub.RefundPayment(refund(key=f"refund-{n % 4}")) for n in range(20)))
    assert len({a.SerializeToString() for a in answers}) == 1
    assert await balance(db, customer) == Decimal("100.00")
    assert await counts(db) == (1, 0, 4)
    await conserved()


async def test_refund_before_the_payment_tombstones_and_refuses_the_late_payment(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    saga = str(uuid.uuid4())
    outcome = await stub.RefundPayment(refund(saga=saga))
    assert (outcome.payment_id, outcome.refunded_amount) == ("", "0.00")
    assert await code_of(stub.ProcessPayment(pay(customer, saga_id=saga))) == grpc.StatusCode.FAILED_PRECONDITION
    assert await balance(db, customer) == Decimal("100.00")
    assert await counts(db) == (0, 1, 1)
    assert str(await db.fetchval("SELECT saga_id FROM payment_tombstones")) == saga
    again = await stub.RefundPayment(refund(key="second-refund"))
    assert again.SerializeToString() == outcome.SerializeToString()
    await conserved()


async def test_payment_racing_its_refund_is_either_undone_or_refused(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("1000.00")
    for n in range(15):
        action = f"race-{n}"
        results = await asyncio.gather(
            stub.ProcessPayment(pay(customer, key=action)),
            stub.RefundPayment(refund(action=action, key=f"undo-{n}")),
            return_exceptions=True,
        )
        paid, undone = results
        if isinstance(paid, grpc.aio.AioRpcError):
            assert paid.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (undone.payment_id, undone.refunded_amount) == ("", "0.00")
        else:
            assert (undone.payment_id, undone.refunded_amount) == (paid.payment.payment_id, "30.00")
    assert await balance(db, customer) == Decimal("1000.00")
    assert await db.fetchval("SELECT count(*) FROM payments WHERE status = 'CAPTURED'") == 0
    await conserved()


async def test_bad_refund_requests_are_invalid_and_persist_nothing(stub: Any, db: asyncpg.Connection) -> None:
    for bad in [{"idempotency_key": ""}, {"action_idempotency_key": ""}, {"saga_id": ""}, {"saga_id": "x"}]:
        request = refund()
        for name, value in bad.items():
            setattr(request, name, value)
        assert await code_of(stub.RefundPayment(request)) == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert await counts(db) == (0, 0, 0)


async def test_refund_key_reused_for_another_payment_is_refused(
    stub: Any, db: asyncpg.Connection, new_account: Any
) -> None:
    customer = await new_account("100.00")
    await stub.ProcessPayment(pay(customer, key="pay-a"))
    await stub.ProcessPayment(pay(customer, key="pay-b"))
    await stub.RefundPayment(refund(action="pay-a", key="refund-x"))
    assert await code_of(stub.RefundPayment(refund(action="pay-b", key="refund-x"))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert await balance(db, customer) == Decimal("70.00")


async def test_get_payment_shows_the_current_status(stub: Any, new_account: Any) -> None:
    customer = await new_account("100.00")
    captured = (await stub.ProcessPayment(pay(customer))).payment
    assert await stub.GetPayment(pb.GetPaymentRequest(payment_id=captured.payment_id)) == captured
    await stub.RefundPayment(refund())
    shown = await stub.GetPayment(pb.GetPaymentRequest(payment_id=captured.payment_id))
    assert shown.status == pb.PAYMENT_STATUS_REFUNDED
    replayed = await stub.ProcessPayment(pay(customer, saga_id=captured.saga_id))
    assert replayed.payment == captured


async def test_get_payment_errors(stub: Any) -> None:
    missing = pb.GetPaymentRequest(payment_id=str(uuid.uuid4()))
    assert await code_of(stub.GetPayment(missing)) == grpc.StatusCode.NOT_FOUND
    assert await code_of(stub.GetPayment(pb.GetPaymentRequest())) == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_answers_serving_and_probes_answer_200(running: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sagaline.payment.v1.PaymentService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as client:
        for path in ("/livez", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/readyz")).json()["database"] == "ok"
