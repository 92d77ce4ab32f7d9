import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagaline_contracts.payment.v1 import payment_pb2 as pb


async def test_thirty_concurrent_payments_never_overdraw(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any
) -> None:
    customer = await new_account("100.00")
    requests = [
        pb.ProcessPaymentRequest(
            idempotency_key=f"pay-{n}",
            saga_id=str(uuid.uuid4()),
            customer_id=str(customer),
            amount="7.00",
            currency="USD",
        )
        for n in range(30)
    ]
    results = await asyncio.gather(*(stub.ProcessPayment(r) for r in requests), return_exceptions=True)
    declined = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert {r.code() for r in declined} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert len(results) - len(declined) == 14
    assert await db.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer) == Decimal("2.00")
    assert await db.fetchval("SELECT count(*) FROM payments") == 14
    await conserved()


# One operation: pay under action key k, or refund action key k under refund key r.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(0, 5), st.sampled_from(["10.00", "25.50", "40.00", "0.01"])),
        st.tuples(st.just("refund"), st.integers(0, 5), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=24,
)


async def run(stub: Any, customer: uuid.UUID, batch: list[tuple[Any, ...]]) -> list[Any]:
    calls = []
    for kind, action, arg in batch:
        key = f"{customer}:{action}"
        if kind == "pay":
            request = pb.ProcessPaymentRequest(
                idempotency_key=key, saga_id=str(customer), customer_id=str(customer), amount=arg, currency="USD"
            )
            calls.append(stub.ProcessPayment(request))
        else:
            request = pb.RefundPaymentRequest(
                idempotency_key=f"{key}:refund-{arg}", saga_id=str(customer), action_idempotency_key=key
            )
            calls.append(stub.RefundPayment(request))
    return await asyncio.gather(*calls, return_exceptions=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, batch_size=st.integers(1, 8), data=st.data())
async def test_any_interleaving_of_payments_and_refunds_conserves_money(
    stub: Any, db: asyncpg.Connection, new_account: Any, conserved: Any, ops: Any, batch_size: int, data: Any
) -> None:
    customer = await new_account(data.draw(st.sampled_from(["50.00", "100.00", "1000.00"])))
    compensated: set[int] = set()
    for start in range(0, len(ops), batch_size):
        batch = ops[start : start + batch_size]
        for result in await run(stub, customer, batch):
            if isinstance(result, grpc.aio.AioRpcError):
                assert result.code() == grpc.StatusCode.FAILED_PRECONDITION, result
        compensated |= {a for kind, a, _ in batch if kind == "refund"}
    await conserved()
    rows = await db.fetch("SELECT idempotency_key, status FROM payments WHERE customer_id = $1", customer)
    for row in rows:
        action = int(row["idempotency_key"].rsplit(":", 1)[1])
        assert (row["status"] == "REFUNDED") == (action in compensated)
