"""Orders: their lines and totals, the status state machine, idempotency receipts and tombstones.

Pure and synchronous: no I/O, no clock, no framework. Every rule a request must satisfy lives here, so
the gRPC adapter only translates and the repository only stores.

Errors, one hierarchy (the gRPC adapter maps each branch to one status code, once)::

    OrderError
    ├── InvalidRequestError         malformed input                                  -> INVALID_ARGUMENT
    ├── NotFoundError               no order with that id                            -> NOT_FOUND
    └── RefusedError                valid request, but the current state forbids it  -> FAILED_PRECONDITION
        ├── IllegalTransitionError  confirm a cancelled order, cancel a confirmed one
        ├── TombstonedError         CreateOrder whose key was compensated before it arrived
        └── KeyReusedError          an idempotency key replayed with a different request
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

CENT: Final = Decimal("0.01")
# numeric(14,2): twelve integer digits at most, for prices and totals alike.
MAX_AMOUNT: Final = Decimal("999999999999.99")
MAX_LINES: Final = 100
MAX_QUANTITY: Final = 1_000_000
MAX_KEY_LENGTH: Final = 255
MAX_SKU_LENGTH: Final = 128
_MONEY: Final = re.compile(r"\d{1,12}(?:\.\d{1,2})?")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")


class OrderError(Exception):
    """Base of every error the order service reports to its callers."""


class InvalidRequestError(OrderError):
    """The request is malformed; retrying it unchanged can never succeed."""


class NotFoundError(OrderError):
    """The order named by the request does not exist."""


class RefusedError(OrderError):
    """The request is well formed but the state of the order (or of its key) forbids it."""


class IllegalTransitionError(RefusedError):
    """The state machine does not allow the requested status change."""


class TombstonedError(RefusedError):
    """The CreateOrder key was compensated before the action arrived; the late action must not happen."""


class KeyReusedError(RefusedError):
    """An idempotency key already recorded for a different request."""


class OrderStatus(enum.StrEnum):
    """Status of an order; the values are exactly the SQL CHECK list of `orders.status`."""

    CREATED = "CREATED"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"

    def transition_to(self, target: OrderStatus) -> OrderStatus:
        """Return target if the state machine allows moving there from this status.

        Raises:
            IllegalTransitionError: the move is not in `ALLOWED_TRANSITIONS`.
        """
        if target not in ALLOWED_TRANSITIONS[self]:
            raise IllegalTransitionError(f"an order in status {self} cannot become {target}")
        return target


# CONFIRMED and CANCELLED are final: a confirmed order is never undone, a cancelled one never revived.
ALLOWED_TRANSITIONS: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = {
    OrderStatus.CREATED: frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.CONFIRMED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


class Operation(enum.StrEnum):
    """A mutating operation whose idempotency key is recorded; the values are the SQL CHECK list."""

    CREATE = "CREATE"
    CONFIRM = "CONFIRM"
    CANCEL = "CANCEL"


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """Parse a canonical UUID string.

    Raises:
        InvalidRequestError: value is empty or not a UUID.
    """
    if not value:
        raise InvalidRequestError(f"{field} is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(f"{field} must be a UUID, got {value!r}") from None


def parse_key(value: str, field: str = "idempotency_key") -> str:
    """Check an idempotency key: 1 to 255 printable ASCII characters.

    Raises:
        InvalidRequestError: the key is missing, too long or not printable ASCII.
    """
    if not value:
        raise InvalidRequestError(f"{field} is required")
    if len(value) > MAX_KEY_LENGTH or not (value.isascii() and value.isprintable()):
        raise InvalidRequestError(f"{field} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def parse_money(value: str, field: str) -> Decimal:
    """Parse a non-negative decimal string with at most 2 fractional digits, such as "12.50".

    Raises:
        InvalidRequestError: malformed, signed, exponent, NaN or infinity, more than 2 decimals, or too large.
    """
    if not _MONEY.fullmatch(value):
        raise InvalidRequestError(f"{field} must be a decimal string such as '12.50', got {value!r}")
    return Decimal(value).quantize(CENT)


def format_money(amount: Decimal) -> str:
    """The wire form of an amount: always exactly 2 fractional digits."""
    return f"{amount.quantize(CENT):f}"


def parse_currency(value: str) -> str:
    """Check an ISO 4217-shaped code: 3 upper-case letters.

    Raises:
        InvalidRequestError: anything else.
    """
    if not _CURRENCY.fullmatch(value):
        raise InvalidRequestError(f"currency must be 3 upper-case letters such as 'USD', got {value!r}")
    return value


@dataclass(frozen=True)
class OrderLine:
    """One line of an order: a quantity of a SKU at a unit price."""

    sku: str
    quantity: int
    unit_price: Decimal

    @classmethod
    def parse(cls, sku: str, quantity: int, unit_price: str, position: int) -> OrderLine:
        """Validate one requested line; position names it in error messages.

        Raises:
            InvalidRequestError: empty or oversized SKU, quantity outside 1..1,000,000, or malformed price.
        """
        where = f"items[{position}]"
        if not sku.strip() or len(sku) > MAX_SKU_LENGTH:
            raise InvalidRequestError(f"{where}.sku must be 1 to {MAX_SKU_LENGTH} characters")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidRequestError(f"{where}.quantity must be between 1 and {MAX_QUANTITY}, got {quantity}")
        return cls(sku, quantity, parse_money(unit_price, f"{where}.unit_price"))

    @property
    def subtotal(self) -> Decimal:
        """The line total: quantity x unit_price, exact."""
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class OrderDraft:
    """A validated CreateOrder request: everything an order is made of except its id and status."""

    idempotency_key: str
    saga_id: uuid.UUID
    customer_id: uuid.UUID
    currency: str
    lines: tuple[OrderLine, ...]

    def __post_init__(self) -> None:
        """Enforce the rules that span lines: at least one, not too many, a storable total."""
        if not self.lines:
            raise InvalidRequestError("an order needs at least one item")
        if len(self.lines) > MAX_LINES:
            raise InvalidRequestError(f"an order has at most {MAX_LINES} items, got {len(self.lines)}")
        if self.total > MAX_AMOUNT:
            raise InvalidRequestError(f"the order total exceeds {format_money(MAX_AMOUNT)}")

    @property
    def total(self) -> Decimal:
        """Sum of the line subtotals, exact; the client never supplies it."""
        return sum((line.subtotal for line in self.lines), Decimal("0.00"))


@dataclass(frozen=True)
class Order:
    """An order as stored. Only `status` ever changes after creation; every other field is immutable."""

    id: uuid.UUID
    saga_id: uuid.UUID
    idempotency_key: str
    customer_id: uuid.UUID
    status: OrderStatus
    total_amount: Decimal
    currency: str
    lines: tuple[OrderLine, ...]

    @classmethod
    def place(cls, order_id: uuid.UUID, draft: OrderDraft) -> Order:
        """A new CREATED order for draft, its total computed from the lines."""
        return cls(
            id=order_id,
            saga_id=draft.saga_id,
            idempotency_key=draft.idempotency_key,
            customer_id=draft.customer_id,
            status=OrderStatus.CREATED,
            total_amount=draft.total,
            currency=draft.currency,
            lines=draft.lines,
        )

    def placed_by(self, draft: OrderDraft) -> bool:
        """True when draft is the request that created this order (a genuine retry, not a reused key)."""
        return (self.idempotency_key, self.saga_id, self.customer_id, self.currency, self.lines) == (
            draft.idempotency_key,
            draft.saga_id,
            draft.customer_id,
            draft.currency,
            draft.lines,
        )

    def confirm(self) -> Order:
        """The order CONFIRMED; confirming a confirmed order changes nothing.

        Raises:
            IllegalTransitionError: the order is CANCELLED.
        """
        return self._move_to(OrderStatus.CONFIRMED)

    def cancel(self) -> Order:
        """The order CANCELLED; cancelling a cancelled order changes nothing.

        Raises:
            IllegalTransitionError: the order is CONFIRMED, which is final.
        """
        return self._move_to(OrderStatus.CANCELLED)

    def as_of(self, status: OrderStatus) -> Order:
        """The same order as it was when it had status; used to replay a recorded response."""
        return dataclasses.replace(self, status=status)

    def _move_to(self, target: OrderStatus) -> Order:
        if self.status is target:
            return self
        return dataclasses.replace(self, status=self.status.transition_to(target))


@dataclass(frozen=True)
class Receipt:
    """The record of a completed ConfirmOrder or CancelOrder, kept under its idempotency key.

    `target` is what the request named (the order id for CONFIRM, the action key for CANCEL) and
    `order_id` is the order it affected, None when a cancellation found no order and left a tombstone.
    Orders never change after CONFIRMED or CANCELLED, so the order plus `result_status` rebuilds the
    original response exactly.
    """

    operation: Operation
    idempotency_key: str
    saga_id: uuid.UUID
    target: str
    order_id: uuid.UUID | None

    @property
    def result_status(self) -> OrderStatus:
        """The status the order had in the original response."""
        return OrderStatus.CONFIRMED if self.operation is Operation.CONFIRM else OrderStatus.CANCELLED

    def check_replay(self, saga_id: uuid.UUID, target: str) -> None:
        """Accept a request carrying this receipt's key only if it is the same request.

        Raises:
            KeyReusedError: the saga or the target differs from the recorded request.
        """
        if (saga_id, target) != (self.saga_id, self.target):
            raise KeyReusedError(f"idempotency key {self.idempotency_key!r} was already used for another request")


@dataclass(frozen=True)
class Tombstone:
    """Left by a CancelOrder that found no order: the CreateOrder with `action_key` must never happen."""

    action_key: str
    saga_id: uuid.UUID
    cancel_key: str
