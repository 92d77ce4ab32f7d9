"""The three things the payment service does: capture a payment, refund it, and show it.

Idempotency. A ProcessPayment key is bound to its payment row by a unique constraint, and every
transaction that reads or writes under that key first takes the per-key lock (`lock_action`), so the
lookup and the effect cannot be split by a concurrent duplicate or a racing refund.

Declines persist nothing. A declined ProcessPayment leaves no row, so the same key may succeed later if
the balance has grown. That is safe because the orchestrator never retries a decline: it compensates,
and the compensation tombstones the key, after which that key is refused for good.

Compensation before the action. RefundPayment on a key with no payment leaves a tombstone and answers
"0.00"; ProcessPayment on a tombstoned key is refused and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from payment_service import domain, ports
from servicekit import logging

log = logging.get_logger(__name__)


class ProcessPayment:
    """Debit an account and record a CAPTURED payment, exactly once per idempotency key."""

    def __init__(self, ledger: ports.Ledger, new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        self._ledger = ledger
        self._new_id = new_id

    async def __call__(self, command: domain.CaptureCommand) -> domain.Payment:
        """Capture the payment command describes, or answer the stored capture for a repeated key.

        Raises:
            NotFound: the customer has no account.
            Declined: the balance is short or the currency is not the account's.
            Tombstoned: the key was compensated before this call.
            KeyReused: the key already captured a different payment.
        """
        payment = domain.Payment.capture(self._new_id(), command)
        if await self._ledger.capture_if_new(payment):
            log.debug("payment captured", saga_id=str(payment.saga_id), payment_id=str(payment.id))
            return payment
        async with self._ledger.transaction() as tx:
            await tx.lock_action(command.idempotency_key)
            history = await tx.action_history(command.idempotency_key)
            if history.payment is not None:
                return history.payment.replay(command)
            if history.tombstoned:
                raise domain.Tombstoned(f"payment {command.idempotency_key!r} was already compensated")
            account = await tx.lock_account(command.customer_id)
            if account is None:
                raise domain.NotFound(f"customer {command.customer_id} has no account")
            debited = account.debit(command.amount, command.currency)
            await tx.record_capture(debited, payment)
        log.debug("payment captured", saga_id=str(payment.saga_id), payment_id=str(payment.id))
        return payment


class RefundPayment:
    """Undo a ProcessPayment: credit it back exactly once, or tombstone its key if it never ran."""

    def __init__(self, ledger: ports.Ledger) -> None:
        self._ledger = ledger

    async def __call__(self, command: domain.RefundCommand) -> domain.RefundOutcome:
        """Refund the payment captured under command.action_idempotency_key.

        Every refund of one action answers the same outcome, whatever its own key: the payment and its
        amount, or no payment and "0.00" when none was captured.

        Raises:
            KeyReused: the refund key was already used to compensate another action.
        """
        outcome = await self._ledger.refund_if_new(command)
        if outcome is not None:
            log.debug("refund recorded", saga_id=str(command.saga_id), refunded_amount=str(outcome.refunded_amount))
            return outcome
        async with self._ledger.transaction() as tx:
            await tx.lock_action(command.action_idempotency_key)
            stored = await tx.find_refund(command.idempotency_key)
            if stored is not None:
                return stored.replay(command)
            history = await tx.action_history(command.action_idempotency_key)
            await self._undo(tx, history, command)
            outcome = domain.RefundOutcome.of(history.payment)
            await tx.store_refund(command, outcome)
        log.debug(
            "refund recorded",
            saga_id=str(command.saga_id),
            action_idempotency_key=command.action_idempotency_key,
            refunded_amount=str(outcome.refunded_amount),
        )
        return outcome

    @staticmethod
    async def _undo(tx: ports.LedgerTransaction, history: domain.ActionHistory, command: domain.RefundCommand) -> None:
        payment = history.payment
        if payment is None:
            await tx.add_tombstone(command.action_idempotency_key, command.saga_id)
        elif payment.status is domain.PaymentStatus.CAPTURED:
            await tx.record_refund(payment.refunded())


class GetPayment:
    """Show a payment with its current status."""

    def __init__(self, reader: ports.PaymentReader) -> None:
        self._reader = reader

    async def __call__(self, payment_id: uuid.UUID) -> domain.Payment:
        """The payment with this id.

        Raises:
            NotFound: there is no such payment.
        """
        payment = await self._reader.get_payment(payment_id)
        if payment is None:
            raise domain.NotFound(f"payment {payment_id} not found")
        return payment
