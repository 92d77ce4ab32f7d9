"""An in-memory payment ledger, faithful to the ports' contract, for the use case tests.

Transactions run one at a time on a copy of the state, which replaces the state on normal exit and is
dropped when the block raises: the same all-or-nothing the PostgreSQL ledger gives, with a global lock
standing in for the per-key and per-account locks.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest

from payment_service import domain


@dataclass
class LedgerState:
    accounts: dict[uuid.UUID, domain.Account] = field(default_factory=dict)
    initial: dict[uuid.UUID, Decimal] = field(default_factory=dict)
    payments: dict[str, domain.Payment] = field(default_factory=dict)
    tombstones: dict[str, uuid.UUID] = field(default_factory=dict)
    refunds: dict[str, domain.StoredRefund] = field(default_factory=dict)


class FakeTransaction:
    def __init__(self, state: LedgerState) -> None:
        self.state = state

    async def lock_action(self, action_key: str) -> None:
        return None

    async def action_history(self, action_key: str) -> domain.ActionHistory:
        return domain.ActionHistory(self.state.payments.get(action_key), action_key in self.state.tombstones)

    async def lock_account(self, customer_id: uuid.UUID) -> domain.Account | None:
        return self.state.accounts.get(customer_id)

    async def record_capture(self, debited: domain.Account, payment: domain.Payment) -> None:
        assert payment.idempotency_key not in self.state.payments, "unique idempotency_key violated"
        assert debited.balance >= 0, "CHECK (balance >= 0) violated"
        self.state.accounts[debited.customer_id] = debited
        self.state.payments[payment.idempotency_key] = payment

    async def record_refund(self, payment: domain.Payment) -> None:
        stored = self.state.payments[payment.idempotency_key]
        if stored.status is not domain.PaymentStatus.CAPTURED:
            return
        self.state.payments[payment.idempotency_key] = replace(stored, status=domain.PaymentStatus.REFUNDED)
        account = self.state.accounts[stored.customer_id]
        self.state.accounts[stored.customer_id] = replace(account, balance=account.balance + stored.amount)

    async def add_tombstone(self, action_key: str, saga_id: uuid.UUID) -> None:
        self.state.tombstones.setdefault(action_key, saga_id)

    async def find_refund(self, refund_key: str) -> domain.StoredRefund | None:
        return self.state.refunds.get(refund_key)

    async def store_refund(self, command: domain.RefundCommand, outcome: domain.RefundOutcome) -> None:
        if command.idempotency_key in self.state.refunds:
            raise domain.KeyReused("refund key already used")
        self.state.refunds[command.idempotency_key] = domain.StoredRefund(command.action_idempotency_key, outcome)


class FakeLedger:
    """A `ports.Ledger` and `ports.PaymentReader` in memory."""

    def __init__(self, accounts: Iterable[domain.Account] = ()) -> None:
        self.state = LedgerState()
        self.commits = 0
        self.fast_path_calls = 0
        self._lock = asyncio.Lock()
        for account in accounts:
            self.add_account(account)

    def add_account(self, account: domain.Account) -> None:
        self.state.accounts[account.customer_id] = account
        self.state.initial[account.customer_id] = account.balance

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTransaction]:
        async with self._lock:
            draft = copy.deepcopy(self.state)
            yield FakeTransaction(draft)
            self.state = draft
            self.commits += 1

    async def capture_if_new(self, payment: domain.Payment) -> bool:
        """Like the database's fast path: only a new key on an account that can pay; never decides a refusal."""
        self.fast_path_calls += 1
        async with self._lock:
            key, account = payment.idempotency_key, self.state.accounts.get(payment.customer_id)
            if key in self.state.payments or key in self.state.tombstones or account is None:
                return False
            if account.currency != payment.currency or account.balance < payment.amount:
                return False
            self.state.accounts[account.customer_id] = account.debit(payment.amount, payment.currency)
            self.state.payments[key] = payment
            self.commits += 1
            return True

    async def refund_if_new(self, command: domain.RefundCommand) -> domain.RefundOutcome | None:
        # The port allows a ledger to always decide through a transaction; this fake does for refunds.
        return None

    async def get_payment(self, payment_id: uuid.UUID) -> domain.Payment | None:
        return next((p for p in self.state.payments.values() if p.id == payment_id), None)

    def balance(self, customer_id: uuid.UUID) -> Decimal:
        return self.state.accounts[customer_id].balance

    def conserved(self, customer_id: uuid.UUID) -> bool:
        mine = [p for p in self.state.payments.values() if p.customer_id == customer_id]
        captured = sum((p.amount for p in mine), Decimal(0))
        refunded = sum((p.amount for p in mine if p.status is domain.PaymentStatus.REFUNDED), Decimal(0))
        return self.state.initial[customer_id] == self.balance(customer_id) + captured - refunded


@pytest.fixture
def fake_ledger() -> FakeLedger:
    return FakeLedger()
