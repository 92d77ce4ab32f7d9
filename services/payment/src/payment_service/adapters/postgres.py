"""The payment ledger on PostgreSQL (asyncpg), in READ COMMITTED transactions.

Every statement that takes a lock or guards an effect is a constant below, with what it guarantees.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

from payment_service import domain
from servicekit import failpoints

# The two-int4 advisory lock space never overlaps the one-bigint space (used by the migration runner);
# this first int scopes our locks to ProcessPayment keys.
_ACTION_LOCK_SPACE: Final = 0x0050_A1D0

# Held until commit or rollback: every transaction touching one ProcessPayment key (capture, its
# duplicates, its refunds) runs one after the other. A hash collision only serializes two unrelated keys.
_LOCK_ACTION: Final = "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))"

# One row always: the payment captured under the key (NULLs if none) and whether the key is tombstoned.
# Run after _LOCK_ACTION, in its own statement, so its snapshot sees whatever the lock waited for.
_ACTION_HISTORY: Final = """
SELECT p.id, p.saga_id, p.idempotency_key, p.customer_id, p.amount, p.currency, p.status,
       EXISTS (SELECT 1 FROM payment_tombstones t WHERE t.action_idempotency_key = k.key) AS tombstoned
FROM (SELECT $1::text AS key) AS k
LEFT JOIN payments AS p ON p.idempotency_key = k.key"""

# Row lock on the account until commit: concurrent payments of one customer debit one after the other,
# each seeing the balance the previous one left.
_LOCK_ACCOUNT: Final = """
SELECT customer_id, name, balance, currency FROM accounts WHERE customer_id = $1 FOR UPDATE"""

# Debit and capture in one statement, in the transaction that holds the account lock. The unique
# idempotency_key backs the action lock; CHECK (balance >= 0) backs the domain's funds check.
_RECORD_CAPTURE: Final = """
WITH debit AS (
    UPDATE accounts SET balance = $7 WHERE customer_id = $4 RETURNING customer_id
)
INSERT INTO payments (id, saga_id, idempotency_key, customer_id, amount, currency, status)
SELECT $1, $2, $3, debit.customer_id, $5, $6, 'CAPTURED' FROM debit"""

# Status change and credit in one statement; the credit happens only if this statement moved the
# payment out of CAPTURED, so a payment can never be credited back twice.
_RECORD_REFUND: Final = """
WITH refunded AS (
    UPDATE payments SET status = 'REFUNDED', refunded_at = clock_timestamp()
    WHERE id = $1 AND status = 'CAPTURED'
    RETURNING customer_id, amount
)
UPDATE accounts AS a SET balance = a.balance + r.amount FROM refunded AS r WHERE a.customer_id = r.customer_id"""

# Idempotent: a second tombstone for the key changes nothing.
_ADD_TOMBSTONE: Final = """
INSERT INTO payment_tombstones (action_idempotency_key, saga_id) VALUES ($1, $2)
ON CONFLICT (action_idempotency_key) DO NOTHING"""

_FIND_REFUND: Final = """
SELECT action_idempotency_key, payment_id, refunded_amount FROM refunds WHERE idempotency_key = $1"""

# Claims the refund key in the transaction of the refund's effect. Returns no row when another
# transaction committed the same key first; the caller then rolls its effect back.
_STORE_REFUND: Final = """
INSERT INTO refunds (idempotency_key, saga_id, action_idempotency_key, payment_id, refunded_amount, reason)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key"""

# The whole capture in one round trip when the key is new and the account can pay (migration 0002);
# false when the general path must decide.
_CAPTURE_IF_NEW: Final = "SELECT payment_capture_if_new($1, $2, $3, $4, $5, $6, $7)"
_REFUND_IF_NEW: Final = "SELECT * FROM payment_refund_if_new($1, $2, $3, $4, $5)"

_GET_PAYMENT: Final = """
SELECT id, saga_id, idempotency_key, customer_id, amount, currency, status FROM payments WHERE id = $1"""

# Seeding never touches an existing account: a re-run keeps balances that payments have moved.
_SEED_ACCOUNT: Final = """
INSERT INTO accounts (customer_id, name, currency, balance, initial_balance) VALUES ($1, $2, $3, $4, $4)
ON CONFLICT (customer_id) DO NOTHING"""

_SHOW_ACCOUNTS: Final = """
SELECT customer_id, name, balance, currency FROM accounts WHERE customer_id = ANY($1::uuid[]) ORDER BY name"""


def _payment(row: Any) -> domain.Payment:
    return domain.Payment(
        id=row["id"],
        saga_id=row["saga_id"],
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=domain.PaymentStatus(row["status"]),
    )


def _account(row: Any) -> domain.Account:
    return domain.Account(
        customer_id=row["customer_id"], name=row["name"], balance=row["balance"], currency=row["currency"]
    )


class PostgresTransaction:
    """A `ports.LedgerTransaction` on one connection inside an open transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def lock_action(self, action_key: str) -> None:
        await self._connection.execute(_LOCK_ACTION, _ACTION_LOCK_SPACE, action_key)

    async def action_history(self, action_key: str) -> domain.ActionHistory:
        row = await self._connection.fetchrow(_ACTION_HISTORY, action_key)
        payment = None if row["id"] is None else _payment(row)
        return domain.ActionHistory(payment=payment, tombstoned=row["tombstoned"])

    async def lock_account(self, customer_id: uuid.UUID) -> domain.Account | None:
        row = await self._connection.fetchrow(_LOCK_ACCOUNT, customer_id)
        return None if row is None else _account(row)

    async def record_capture(self, debited: domain.Account, payment: domain.Payment) -> None:
        await self._connection.execute(
            _RECORD_CAPTURE,
            payment.id,
            payment.saga_id,
            payment.idempotency_key,
            payment.customer_id,
            payment.amount,
            payment.currency,
            debited.balance,
        )

    async def record_refund(self, payment: domain.Payment) -> None:
        await self._connection.execute(_RECORD_REFUND, payment.id)

    async def add_tombstone(self, action_key: str, saga_id: uuid.UUID) -> None:
        await self._connection.execute(_ADD_TOMBSTONE, action_key, saga_id)

    async def find_refund(self, refund_key: str) -> domain.StoredRefund | None:
        row = await self._connection.fetchrow(_FIND_REFUND, refund_key)
        if row is None:
            return None
        outcome = domain.RefundOutcome(payment_id=row["payment_id"], refunded_amount=row["refunded_amount"])
        return domain.StoredRefund(action_idempotency_key=row["action_idempotency_key"], outcome=outcome)

    async def store_refund(self, command: domain.RefundCommand, outcome: domain.RefundOutcome) -> None:
        stored = await self._connection.fetchval(
            _STORE_REFUND,
            command.idempotency_key,
            command.saga_id,
            command.action_idempotency_key,
            outcome.payment_id,
            outcome.refunded_amount,
            command.reason,
        )
        if stored is None:
            raise domain.KeyReused(f"refund key {command.idempotency_key!r} already compensated another payment")


class PostgresLedger:
    """A `ports.Ledger` and `ports.PaymentReader` over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._pool.acquire() as connection:
            async with connection.transaction():
                yield PostgresTransaction(connection)
                await failpoints.hit("payment.before_commit")
            await failpoints.hit("payment.after_commit")

    async def capture_if_new(self, payment: domain.Payment) -> bool:
        # One statement is its own transaction: "before commit" is before it leaves, "after" once it has.
        await failpoints.hit("payment.before_commit")
        captured = await self._pool.fetchval(
            _CAPTURE_IF_NEW, _ACTION_LOCK_SPACE, payment.idempotency_key, payment.id, payment.saga_id,
            payment.customer_id, payment.amount, payment.currency,
        )  # fmt: skip
        await failpoints.hit("payment.after_commit")
        return bool(captured)

    async def refund_if_new(self, command: domain.RefundCommand) -> domain.RefundOutcome | None:
        await failpoints.hit("payment.before_commit")
        try:
            row = await self._pool.fetchrow(
                _REFUND_IF_NEW, _ACTION_LOCK_SPACE, command.idempotency_key, command.saga_id,
                command.action_idempotency_key, command.reason,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:  # the refund key answered another action meanwhile: nothing changed
            return None
        await failpoints.hit("payment.after_commit")
        if row is None:
            return None
        return domain.RefundOutcome(payment_id=row["refunded_payment"], refunded_amount=row["refunded"])

    async def get_payment(self, payment_id: uuid.UUID) -> domain.Payment | None:
        row = await self._pool.fetchrow(_GET_PAYMENT, payment_id)
        return None if row is None else _payment(row)


async def seed_accounts(dsn: str, accounts: Iterable[domain.Account]) -> list[domain.Account]:
    """Create the accounts that do not exist yet, in one transaction; returns all of them as they are now."""
    wanted = list(accounts)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.executemany(
                _SEED_ACCOUNT, [(a.customer_id, a.name, a.currency, a.balance) for a in wanted]
            )
        rows = await connection.fetch(_SHOW_ACCOUNTS, [a.customer_id for a in wanted])
    finally:
        await connection.close()
    return [_account(row) for row in rows]
