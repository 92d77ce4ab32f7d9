"""The payment domain: accounts, payments, refunds and the rules that keep money conserved.

Money is `decimal.Decimal` with at most two fractional digits. For every customer, at all times:

    initial_balance = balance + sum(captured amounts) - sum(amounts of REFUNDED payments)

Errors form one hierarchy; the gRPC adapter maps each branch to one status code:

    PaymentError
    ├── InvalidRequest      INVALID_ARGUMENT     malformed money, uuid, key or currency
    ├── NotFound            NOT_FOUND            unknown customer or payment
    └── Rejected            FAILED_PRECONDITION  nothing was changed
        ├── Declined                             insufficient funds, currency mismatch
        ├── Tombstoned                           the action was compensated before it ran
        ├── KeyReused                            an idempotency key came back with another request
        └── IllegalTransition                    a status change the state machine forbids
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Final

ZERO: Final = Decimal("0.00")
_CENT: Final = Decimal("0.01")
_MONEY: Final = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
MAX_KEY_LENGTH: Final = 255


class PaymentError(Exception):
    """Base of every error this service reports to a caller."""


class InvalidRequest(PaymentError):
    """The request is malformed; retrying it unchanged can never succeed."""


class NotFound(PaymentError):
    """The customer or payment named by the request does not exist."""


class Rejected(PaymentError):
    """The request is well-formed but the current state refuses it; nothing was changed."""


class Declined(Rejected):
    """A business decline: the account cannot pay."""


class Tombstoned(Rejected):
    """The payment was compensated before it was attempted, so it may never happen."""


class KeyReused(Rejected):
    """An idempotency key was sent again with a different request."""


class IllegalTransition(Rejected):
    """A payment status change outside the allowed transitions."""


class PaymentStatus(StrEnum):
    """Status of a payment; the values equal the SQL CHECK list of `payments.status`."""

    CAPTURED = "CAPTURED"
    REFUNDED = "REFUNDED"


_TRANSITIONS: Final[dict[PaymentStatus, frozenset[PaymentStatus]]] = {
    PaymentStatus.CAPTURED: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.REFUNDED: frozenset(),
}


def transition(current: PaymentStatus, target: PaymentStatus) -> PaymentStatus:
    """Return target if the state machine allows current -> target.

    Raises:
        IllegalTransition: the change is not in the allowed-transitions table.
    """
    if target not in _TRANSITIONS[current]:
        raise IllegalTransition(f"payment cannot go from {current} to {target}")
    return target


def parse_money(text: str, field: str = "amount") -> Decimal:
    """Parse a non-negative decimal string with at most two fractional digits ("12.50").

    Exponents, signs, NaN, infinities and more than 12 integer digits are refused, so every accepted
    value fits `numeric(14,2)` exactly.

    Raises:
        InvalidRequest: the text is not such an amount.
    """
    if not _MONEY.fullmatch(text):
        raise InvalidRequest(f"{field} must be a decimal string with at most 2 decimals, got {text!r}")
    return Decimal(text).quantize(_CENT)


def format_money(amount: Decimal) -> str:
    """Render an amount the way the wire carries it: always two decimals ("12.50")."""
    return str(amount.quantize(_CENT))


def parse_uuid(text: str, field: str) -> uuid.UUID:
    """Parse a UUID in its canonical or compact form.

    Raises:
        InvalidRequest: the text is empty or not a UUID.
    """
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidRequest(f"{field} must be a UUID, got {text!r}") from None


def parse_key(text: str, field: str = "idempotency_key") -> str:
    """Check an idempotency key: 1 to 255 characters.

    Raises:
        InvalidRequest: the key is missing or too long.
    """
    if not text:
        raise InvalidRequest(f"{field} is required")
    if len(text) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{field} must be at most {MAX_KEY_LENGTH} characters")
    return text


def parse_currency(text: str) -> str:
    """Check an ISO 4217 currency code such as "USD".

    Raises:
        InvalidRequest: the text is not three capital letters.
    """
    if not _CURRENCY.fullmatch(text):
        raise InvalidRequest(f"currency must be an ISO 4217 code such as 'USD', got {text!r}")
    return text


@dataclass(frozen=True)
class Account:
    """A customer's account; the balance never goes below zero."""

    customer_id: uuid.UUID
    name: str
    balance: Decimal
    currency: str = "USD"

    def debit(self, amount: Decimal, currency: str) -> Account:
        """Return the account after paying amount.

        Raises:
            Declined: the currency differs from the account's or the balance is short.
        """
        if currency != self.currency:
            raise Declined(f"account is kept in {self.currency}, payment is in {currency}")
        if amount > self.balance:
            raise Declined("insufficient funds")
        return replace(self, balance=self.balance - amount)


@dataclass(frozen=True)
class CaptureCommand:
    """A validated ProcessPayment request."""

    idempotency_key: str
    saga_id: uuid.UUID
    customer_id: uuid.UUID
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        """Refuse a zero amount, which parse_money alone lets through."""
        if self.amount <= ZERO:
            raise InvalidRequest("amount must be greater than zero")


@dataclass(frozen=True)
class Payment:
    """A captured payment; only its status (and refund time) ever changes."""

    id: uuid.UUID
    saga_id: uuid.UUID
    idempotency_key: str
    customer_id: uuid.UUID
    amount: Decimal
    currency: str
    status: PaymentStatus

    @classmethod
    def capture(cls, payment_id: uuid.UUID, command: CaptureCommand) -> Payment:
        """The payment that command creates once the account has been debited."""
        return cls(
            id=payment_id,
            saga_id=command.saga_id,
            idempotency_key=command.idempotency_key,
            customer_id=command.customer_id,
            amount=command.amount,
            currency=command.currency,
            status=PaymentStatus.CAPTURED,
        )

    def refunded(self) -> Payment:
        """This payment after its refund.

        Raises:
            IllegalTransition: it is already refunded.
        """
        return replace(self, status=transition(self.status, PaymentStatus.REFUNDED))

    def replay(self, command: CaptureCommand) -> Payment:
        """The original response to a repeated ProcessPayment: the payment as it was captured.

        A payment refunded since is still answered as CAPTURED, because that is what the first call
        answered; the current status is what GetPayment is for.

        Raises:
            KeyReused: command is not the request that created this payment.
        """
        if Payment.capture(self.id, command) != replace(self, status=PaymentStatus.CAPTURED):
            raise KeyReused(f"idempotency key {command.idempotency_key!r} was used for a different payment")
        return replace(self, status=PaymentStatus.CAPTURED)


@dataclass(frozen=True)
class ActionHistory:
    """Everything that ever happened under one ProcessPayment idempotency key."""

    payment: Payment | None
    tombstoned: bool


@dataclass(frozen=True)
class RefundCommand:
    """A validated RefundPayment request."""

    idempotency_key: str
    saga_id: uuid.UUID
    action_idempotency_key: str
    reason: str


@dataclass(frozen=True)
class RefundOutcome:
    """The answer to a refund: the payment refunded (None if none was captured) and the amount."""

    payment_id: uuid.UUID | None
    refunded_amount: Decimal

    @classmethod
    def of(cls, payment: Payment | None) -> RefundOutcome:
        """The outcome every refund of this action reports, first or repeated alike."""
        if payment is None:
            return cls(payment_id=None, refunded_amount=ZERO)
        return cls(payment_id=payment.id, refunded_amount=payment.amount)


@dataclass(frozen=True)
class StoredRefund:
    """A refund request already answered, kept so a repeat gets the same answer."""

    action_idempotency_key: str
    outcome: RefundOutcome

    def replay(self, command: RefundCommand) -> RefundOutcome:
        """The stored outcome, for a repeat of the same refund.

        Raises:
            KeyReused: the refund key was first used to compensate another action.
        """
        if command.action_idempotency_key != self.action_idempotency_key:
            raise KeyReused(f"refund key {command.idempotency_key!r} already compensated another payment")
        return self.outcome
