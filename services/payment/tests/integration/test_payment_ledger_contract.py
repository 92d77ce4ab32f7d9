"""The same use case scenarios on the in-memory fake and on PostgreSQL, so the fake stays honest."""

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from payment_service import bootstrap, domain, usecases
from payment_service.adapters import postgres

SAGA = uuid.UUID("99999999-9999-4999-8999-999999999999")


class Subject:
    """Use cases over one ledger, plus a way to read balances and payment statuses back."""

    def __init__(self, ledger: Any, balance: Any, statuses: Any) -> None:
        self.process = usecases.ProcessPayment(ledger)
        self.refund = usecases.RefundPayment(ledger)
        self.get = usecases.GetPayment(ledger)
        self.balance = balance
        self.statuses = statuses


@pytest.fixture(params=["fake", "postgres"])
async def subject(
    request: pytest.FixtureRequest, fake_ledger: Any, make_database: Any
) -> AsyncIterator[tuple[Subject, uuid.UUID]]:
    customer = uuid.uuid4()
    account = domain.Account(customer, "dora", Decimal("100.00"))
    if request.param == "fake":
        fake_ledger.add_account(account)

        async def fake_statuses() -> list[str]:
            return sorted(p.status.value for p in fake_ledger.state.payments.values())

        async def fake_balance() -> Decimal:
            return Decimal(fake_ledger.balance(customer))

        yield Subject(fake_ledger, fake_balance, fake_statuses), customer
        return
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_accounts(url, [account])
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)

    async def pg_statuses() -> list[str]:
        return sorted(r["status"] for r in await pool.fetch("SELECT status FROM payments"))

    async def pg_balance() -> Decimal:
        value: Decimal = await pool.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer)
        return value

    yield Subject(postgres.PostgresLedger(pool), pg_balance, pg_statuses), customer
    await pool.close()


def pay(customer: uuid.UUID, key: str = "pay-1", amount: str = "30.00") -> domain.CaptureCommand:
    return domain.CaptureCommand(key, SAGA, customer, Decimal(amount), "USD")


def undo(action: str = "pay-1", key: str = "refund-1") -> domain.RefundCommand:
    return domain.RefundCommand(key, SAGA, action, "")


async def test_capture_replay_and_refund_agree(subject: tuple[Subject, uuid.UUID]) -> None:
    it, customer = subject
    first = await it.process(pay(customer))
    assert await it.process(pay(customer)) == first
    assert await it.balance() == Decimal("70.00")
    assert await it.refund(undo()) == domain.RefundOutcome(first.id, Decimal("30.00"))
    assert await it.refund(undo(key="refund-2")) == domain.RefundOutcome(first.id, Decimal("30.00"))
    assert await it.balance() == Decimal("100.00")
    assert (await it.get(first.id)).status is domain.PaymentStatus.REFUNDED
    assert await it.statuses() == ["REFUNDED"]


async def test_decline_and_tombstone_agree(subject: tuple[Subject, uuid.UUID]) -> None:
    it, customer = subject
    with pytest.raises(domain.Declined):
        await it.process(pay(customer, amount="100.01"))
    assert await it.refund(undo()) == domain.RefundOutcome(None, Decimal("0.00"))
    with pytest.raises(domain.Tombstoned):
        await it.process(pay(customer))
    with pytest.raises(domain.NotFound):
        await it.process(pay(uuid.uuid4(), key="pay-2"))
    assert await it.balance() == Decimal("100.00")
    assert await it.statuses() == []


async def test_reused_keys_agree(subject: tuple[Subject, uuid.UUID]) -> None:
    it, customer = subject
    await it.process(pay(customer))
    await it.process(pay(customer, key="pay-2"))
    with pytest.raises(domain.KeyReused):
        await it.process(pay(customer, amount="1.00"))
    await it.refund(undo())
    with pytest.raises(domain.KeyReused):
        await it.refund(undo(action="pay-2"))
    assert await it.statuses() == ["CAPTURED", "REFUNDED"]
    assert await it.balance() == Decimal("70.00")
