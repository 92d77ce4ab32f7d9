"""The seams the use cases need: a transactional ledger of accounts, payments, refunds and tombstones.

A `Ledger` opens one transaction at a time. Everything done through the `LedgerTransaction` it yields
commits together when the block exits normally and is rolled back when it raises, so a use case that
raises (a decline, a tombstone) leaves nothing behind.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from payment_service import domain


class LedgerTransaction(Protocol):
    """Reads and writes inside one transaction."""

    async def lock_action(self, action_key: str) -> None:
        """Serialize, until commit, with every other transaction touching this ProcessPayment key.

        ProcessPayment and RefundPayment of one key both take this lock first, so either the payment
        happened and the refund sees it, or the tombstone exists and the payment sees it.
        """

    async def action_history(self, action_key: str) -> domain.ActionHistory:
        """The payment captured under action_key, if any, and whether the key is tombstoned."""

    async def lock_account(self, customer_id: uuid.UUID) -> domain.Account | None:
        """Read an account and lock it against concurrent debits until commit; None if unknown."""

    async def record_capture(self, debited: domain.Account, payment: domain.Payment) -> None:
        """Store the locked account's new balance and the CAPTURED payment that paid for it."""

    async def record_refund(self, payment: domain.Payment) -> None:
        """Store payment as REFUNDED and credit its amount back, only if it was still CAPTURED."""

    async def add_tombstone(self, action_key: str, saga_id: uuid.UUID) -> None:
        """Mark action_key as compensated, so a ProcessPayment with it is refused (idempotent)."""

    async def find_refund(self, refund_key: str) -> domain.StoredRefund | None:
        """The refund stored under refund_key, if that refund was already answered."""

    async def store_refund(self, command: domain.RefundCommand, outcome: domain.RefundOutcome) -> None:
        """Store the answer to a refund under its own key.

        Raises:
            KeyReused: another transaction stored a refund under the same key meanwhile.
        """


class Ledger(Protocol):
    """Opens transactions on the payment ledger."""

    async def capture_if_new(self, payment: domain.Payment) -> bool:
        """Record payment at once if its key has no history and its account can pay it; else change nothing.

        False means "decide through a transaction": a ledger may always answer False.
        """
        ...

    async def refund_if_new(self, command: domain.RefundCommand) -> domain.RefundOutcome | None:
        """Undo the action at once if the refund key has no answer yet, storing the answer; else change nothing.

        At once: refund a CAPTURED payment, or tombstone a key that captured nothing. None means "decide
        through a transaction": a ledger may always answer None.
        """
        ...

    def transaction(self) -> AbstractAsyncContextManager[LedgerTransaction]:
        """A transaction: committed on normal exit, rolled back when the block raises."""


class PaymentReader(Protocol):
    """Reads payments outside any transaction of the caller."""

    async def get_payment(self, payment_id: uuid.UUID) -> domain.Payment | None:
        """The payment with this id, with its current status; None if there is none."""
