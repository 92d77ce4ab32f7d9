"""What a capture costs the database: the common case is one statement, every other case still decides right."""

import uuid
from decimal import Decimal
from typing import Any

import pytest

from payment_service import bootstrap, domain, usecases
from payment_service.adapters import postgres

SAGA = uuid.UUID("99999999-9999-4999-8999-999999999999")


def pay(key: str, customer: uuid.UUID, amount: str, currency: str = "USD") -> domain.CaptureCommand:
    return domain.CaptureCommand(key, SAGA, customer, Decimal(amount), currency)


async def test_a_new_capture_is_one_statement_and_the_other_cases_take_the_general_path(
    make_database: Any, statement_log: Any
) -> None:
    customer = uuid.uuid4()
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_accounts(url, [domain.Account(customer, "erin", Decimal("50.00"))])
    pool = await statement_log.pool(url)
    process = usecases.ProcessPayment(postgres.PostgresLedger(pool))
    await process(pay("warm-up", customer, "0.01"))
    statement_log.sent.clear()  # the first call also read the types of the statement's parameters
    first = await process(pay("pay-1", customer, "30.00"))
    assert statement_log.sent == ["SELECT"]  # was BEGIN, lock, history, account, capture, COMMIT
    statement_log.sent.clear()
    assert await process(pay("pay-1", customer, "30.00")) == first
    assert "BEGIN" in statement_log.sent  # a replay is decided by the general path
    with pytest.raises(domain.Declined):  # 19.99 left
        await process(pay("pay-2", customer, "30.00"))
    with pytest.raises(domain.Declined):
        await process(pay("pay-3", customer, "10.00", "EUR"))
    with pytest.raises(domain.NotFound):
        await process(pay("pay-4", uuid.uuid4(), "1.00"))
    assert await pool.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer) == Decimal("19.99")
    assert await pool.fetchval("SELECT count(*) FROM payments") == 2


async def test_the_fast_path_refuses_a_key_that_a_refund_tombstoned_first(
    make_database: Any, statement_log: Any
) -> None:
    customer = uuid.uuid4()
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_accounts(url, [domain.Account(customer, "finn", Decimal("50.00"))])
    ledger = postgres.PostgresLedger(pool := await statement_log.pool(url))
    await usecases.RefundPayment(ledger)(domain.RefundCommand("refund-1", SAGA, "pay-1", ""))
    with pytest.raises(domain.Tombstoned):
        await usecases.ProcessPayment(ledger)(pay("pay-1", customer, "5"))
    assert await pool.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer) == Decimal("50")


async def test_a_refund_is_one_statement_and_answers_what_the_general_path_answers(
    make_database: Any, statement_log: Any
) -> None:
    customer = uuid.uuid4()
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    await postgres.seed_accounts(url, [domain.Account(customer, "gale", Decimal("50.00"))])
    ledger = postgres.PostgresLedger(pool := await statement_log.pool(url))
    process, refund = usecases.ProcessPayment(ledger), usecases.RefundPayment(ledger)
    await refund(domain.RefundCommand("warm-up", SAGA, "nothing-there", ""))
    captured = await process(pay("pay-1", customer, "20.00"))
    statement_log.sent.clear()  # the first calls also read the types of the statements' parameters
    first = await refund(domain.RefundCommand("refund-1", SAGA, "pay-1", "saga compensated"))
    never = await refund(domain.RefundCommand("refund-2", SAGA, "pay-2", "saga compensated"))
    assert statement_log.sent == ["SELECT", "SELECT"]  # was BEGIN, lock, refund, history, effect, answer, COMMIT
    assert first == domain.RefundOutcome(captured.id, Decimal("20.00"))
    assert never == domain.RefundOutcome(None, Decimal("0.00"))
    assert str(never.refunded_amount) == "0.00"  # the answer's text, as the general path gives it
    # Repeats, a second refund key for a refunded payment, and a reused key go the general path, as before.
    assert await refund(domain.RefundCommand("refund-1", SAGA, "pay-1", "")) == first
    assert await refund(domain.RefundCommand("refund-3", SAGA, "pay-1", "")) == first
    with pytest.raises(domain.KeyReused):
        await refund(domain.RefundCommand("refund-1", SAGA, "pay-2", ""))
    with pytest.raises(domain.Tombstoned):
        await process(pay("pay-2", customer, "1.00"))
    assert await pool.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer) == Decimal("50.00")
    assert await pool.fetchval("SELECT count(*) FROM refunds") == 4
