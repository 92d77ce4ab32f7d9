import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

from payment_service import domain, usecases

CUSTOMER = uuid.UUID("33333333-3333-4333-8333-333333333333")
SAGA = uuid.UUID("99999999-9999-4999-8999-999999999999")


@pytest.fixture
def ledger(fake_ledger: Any) -> Any:
    fake_ledger.add_account(domain.Account(CUSTOMER, "carol", Decimal("100.00")))
    return fake_ledger


@pytest.fixture
def process(ledger: Any) -> usecases.ProcessPayment:
    ids = iter(uuid.UUID(int=n) for n in range(1, 1000))
    return usecases.ProcessPayment(ledger, new_id=lambda: next(ids))


@pytest.fixture
def refund(ledger: Any) -> usecases.RefundPayment:
    return usecases.RefundPayment(ledger)


def pay(key: str = "pay-1", amount: str = "30.00", customer: uuid.UUID = CUSTOMER) -> domain.CaptureCommand:
    return domain.CaptureCommand(key, SAGA, customer, Decimal(amount), "USD")


def undo(action: str = "pay-1", key: str = "refund-1") -> domain.RefundCommand:
    return domain.RefundCommand(key, SAGA, action, "payment declined downstream")


async def test_payment_debits_the_account_and_is_captured(ledger: Any, process: usecases.ProcessPayment) -> None:
    payment = await process(pay())
    assert payment.status is domain.PaymentStatus.CAPTURED
    assert payment.amount == Decimal("30.00")
    assert ledger.balance(CUSTOMER) == Decimal("70.00")
    assert ledger.conserved(CUSTOMER)


async def test_repeated_payment_answers_the_same_and_debits_once(ledger: Any, process: usecases.ProcessPayment) -> None:
    first = await process(pay())
    assert await process(pay()) == first
    assert ledger.balance(CUSTOMER) == Decimal("70.00")
    assert len(ledger.state.payments) == 1


async def test_concurrent_duplicates_debit_once(ledger: Any, process: usecases.ProcessPayment) -> None:
    answers = await asyncio.gather(*(process(pay()) for _ in range(20)))
    assert len(set(answers)) == 1
    assert ledger.balance(CUSTOMER) == Decimal("70.00")


async def test_key_reused_for_another_amount_is_refused(ledger: Any, process: usecases.ProcessPayment) -> None:
    await process(pay())
    with pytest.raises(domain.KeyReused):
        await process(pay(amount="31.00"))
    assert ledger.balance(CUSTOMER) == Decimal("70.00")


async def test_insufficient_funds_declines_and_persists_nothing(ledger: Any, process: usecases.ProcessPayment) -> None:
    with pytest.raises(domain.Declined, match="insufficient funds"):
        await process(pay(amount="100.01"))
    assert ledger.balance(CUSTOMER) == Decimal("100.00")
    assert ledger.state.payments == {}
    assert ledger.commits == 0


async def test_declined_key_may_succeed_once_the_balance_allows(ledger: Any, process: usecases.ProcessPayment) -> None:
    await process(pay("big", amount="80.00"))
    with pytest.raises(domain.Declined):
        await process(pay("late", amount="30.00"))
    await usecases.RefundPayment(ledger)(undo(action="big"))
    assert (await process(pay("late", amount="30.00"))).status is domain.PaymentStatus.CAPTURED


async def test_unknown_customer_is_not_found(ledger: Any, process: usecases.ProcessPayment) -> None:
    with pytest.raises(domain.NotFound, match="no account"):
        await process(pay(customer=uuid.uuid4()))
    assert ledger.state.payments == {}


async def test_refund_credits_the_payment_back_once(
    ledger: Any, process: usecases.ProcessPayment, refund: usecases.RefundPayment
) -> None:
    payment = await process(pay())
    outcome = await refund(undo())
    assert outcome == domain.RefundOutcome(payment.id, Decimal("30.00"))
    assert await refund(undo()) == outcome
    assert await refund(undo(key="refund-2")) == outcome
    assert ledger.balance(CUSTOMER) == Decimal("100.00")
    assert ledger.state.payments["pay-1"].status is domain.PaymentStatus.REFUNDED
    assert ledger.conserved(CUSTOMER)


async def test_payment_replayed_after_its_refund_answers_the_original_capture(
    ledger: Any, process: usecases.ProcessPayment, refund: usecases.RefundPayment
) -> None:
    first = await process(pay())
    await refund(undo())
    assert await process(pay()) == first
    assert ledger.balance(CUSTOMER) == Decimal("100.00")


async def test_refund_before_the_payment_tombstones_it(
    ledger: Any, process: usecases.ProcessPayment, refund: usecases.RefundPayment
) -> None:
    assert await refund(undo()) == domain.RefundOutcome(None, Decimal("0.00"))
    with pytest.raises(domain.Tombstoned):
        await process(pay())
    assert ledger.state.payments == {}
    assert ledger.balance(CUSTOMER) == Decimal("100.00")
    assert await refund(undo(key="refund-2")) == domain.RefundOutcome(None, Decimal("0.00"))


async def test_refund_key_reused_for_another_payment_is_refused(
    ledger: Any, process: usecases.ProcessPayment, refund: usecases.RefundPayment
) -> None:
    await process(pay("pay-2"))
    await refund(undo())
    with pytest.raises(domain.KeyReused):
        await refund(undo(action="pay-2"))
    assert ledger.state.payments["pay-2"].status is domain.PaymentStatus.CAPTURED
    assert ledger.balance(CUSTOMER) == Decimal("70.00")


async def test_get_payment_shows_the_current_status(
    ledger: Any, process: usecases.ProcessPayment, refund: usecases.RefundPayment
) -> None:
    payment = await process(pay())
    await refund(undo())
    shown = await usecases.GetPayment(ledger)(payment.id)
    assert shown.status is domain.PaymentStatus.REFUNDED


async def test_get_unknown_payment_is_not_found(ledger: Any) -> None:
    with pytest.raises(domain.NotFound):
        await usecases.GetPayment(ledger)(uuid.uuid4())
